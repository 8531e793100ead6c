#include "kv/kv_cache.h"

#include "backend/backend.h"
#include "core/error.h"

namespace lserve {

KvCache::KvCache(Backend& backend, const KvCacheConfig& config, HeadMap heads)
    : config_(config), heads_(std::move(heads)) {
  LSERVE_CHECK(config.page_size > 0 && config.logical_page_size > 0 &&
                   config.page_size % config.logical_page_size == 0,
               "page size {} must be a positive multiple of the logical page size {}",
               config.page_size, config.logical_page_size);
  LSERVE_CHECK(static_cast<int>(heads_.cls.size()) == config.n_layers,
               "head map has {} layers, model has {}", heads_.cls.size(), config.n_layers);
  for (auto* lay : {&retrieval_, &streaming_}) {
    lay->page_size = config.page_size;
    lay->head_dim = config.head_dim;
  }
  retrieval_.num_pages = config.num_pages;
  streaming_.num_pages = config.num_stream_pages;
  const int lpp = logical_pages_per_page();
  for (int l = 0; l < config.n_layers; ++l) {
    const int nr = heads_.count(l, HeadClass::kRetrieval);
    const int ns = heads_.count(l, HeadClass::kStreaming);
    retrieval_.heads_per_layer.push_back(nr);
    streaming_.heads_per_layer.push_back(ns);
    const DType dt = backend.compute_dtype();
    auto add = [&](std::vector<Tensor>& dst, int64_t rows) {
      dst.push_back(rows > 0 ? backend.alloc(dt, rows, config.head_dim) : Tensor{});
      bytes_ += static_cast<int64_t>(dst.back().nbytes());
    };
    const int64_t rrows = static_cast<int64_t>(config.num_pages) * nr * config.page_size;
    const int64_t srows = static_cast<int64_t>(config.num_stream_pages) * ns * config.page_size;
    add(retrieval_store_.k, rrows);
    add(retrieval_store_.v, rrows);
    add(retrieval_store_.kmin, static_cast<int64_t>(config.num_pages) * nr * lpp);
    add(retrieval_store_.kmax, static_cast<int64_t>(config.num_pages) * nr * lpp);
    add(streaming_store_.k, srows);
    add(streaming_store_.v, srows);
  }
}

}  // namespace lserve
