#include "kv/kv_cache.h"

#include "backend/backend.h"
#include "core/error.h"

namespace lserve {

KvPageBytes kv_page_bytes(const HeadMap& heads, const SparseAttentionConfig& sparse,
                          const KvRowBytes& row) {
  KvPageBytes b;
  const int64_t P = sparse.page_size, lpp = sparse.page_size / sparse.logical_page_size;
  for (size_t l = 0; l < heads.cls.size(); ++l) {
    const int64_t nr = heads.count(static_cast<int>(l), HeadClass::kRetrieval);
    const int64_t ns = heads.count(static_cast<int>(l), HeadClass::kStreaming);
    // Logical pages of one token keep no bounds: the selector reads the keys themselves.
    const int64_t stats = lpp == P ? 0 : 2 * lpp;
    b.retrieval += nr * (2 * P * row.kv + stats * row.stats);
    b.streaming += ns * 2 * P * row.kv;
  }
  return b;
}

int KvCache::sel_heads() const {
  return config_.sparse.granularity == SelectorGranularity::kKvHead ? config_.n_kv_heads
                                                                    : config_.n_heads;
}

KvCache::KvCache(Backend& backend, const KvCacheConfig& config, HeadMap heads)
    : config_(config), heads_(std::move(heads)) {
  config.sparse.validate();
  LSERVE_CHECK(static_cast<int>(heads_.cls.size()) == config.n_layers,
               "head map has {} layers, model has {}", heads_.cls.size(), config.n_layers);
  const int P = page_size(), d = config.head_dim;
  for (auto* lay : {&retrieval_, &streaming_}) {
    lay->page_size = P;
    lay->head_dim = d;
  }
  retrieval_.num_pages = config.num_pages;
  streaming_.num_pages = config.num_stream_pages;
  const int lpp = logical_pages_per_page();
  const DType dt = backend.compute_dtype();
  storage_ = backend.kv_storage_dtype(config.dtype);
  row_bytes_ = kv_row_bytes(storage_, dt, d);
  const bool scaled = storage_ == DType::F8E4M3;
  // One-token logical pages use the key pool as their bounds, which the selector reads in the
  // compute dtype.
  LSERVE_CHECK(!scaled || lpp != P,
               "--kv-cache-dtype {} with --logical-page-size 1 is not supported on the {} "
               "backend (the selector reads one-token pages' keys in {}); use a logical page "
               "size above 1",
               kv_dtype_name(config.dtype), backend.name(), dtype_name(dt));
  auto add = [&](std::vector<Tensor>& dst, int64_t rows, int64_t& counter, DType type,
                 int64_t cols) {
    dst.push_back(rows > 0 ? backend.alloc(type, rows, cols) : Tensor{});
    counter += static_cast<int64_t>(dst.back().nbytes());
  };
  // K and V of one pool, with their per-row scales when they hold fp8.
  auto add_kv = [&](Store& st, int64_t rows, int64_t& counter) {
    add(st.k, rows, counter, storage_, d);
    add(st.v, rows, counter, storage_, d);
    if (scaled) {
      add(st.k_scale, rows, counter, DType::F32, 1);
      add(st.v_scale, rows, counter, DType::F32, 1);
    } else {
      st.k_scale.emplace_back();
      st.v_scale.emplace_back();
    }
  };
  for (int l = 0; l < config.n_layers; ++l) {
    const int nr = heads_.count(l, HeadClass::kRetrieval);
    const int ns = heads_.count(l, HeadClass::kStreaming);
    retrieval_.heads_per_layer.push_back(nr);
    streaming_.heads_per_layer.push_back(ns);
    const int64_t rrows = static_cast<int64_t>(config.num_pages) * nr * P;
    const int64_t srows = static_cast<int64_t>(config.num_stream_pages) * ns * P;
    add_kv(retrieval_store_, rrows, retrieval_bytes_);
    if (lpp == P) {
      // A one-token logical page's bounds are its key: kmin and kmax are the key pool itself, so
      // the selector scores each key exactly and no bounds are stored or written.
      retrieval_store_.kmin.push_back(retrieval_store_.k.back());
      retrieval_store_.kmax.push_back(retrieval_store_.k.back());
    } else {
      add(retrieval_store_.kmin, static_cast<int64_t>(config.num_pages) * nr * lpp,
          retrieval_bytes_, dt, d);
      add(retrieval_store_.kmax, static_cast<int64_t>(config.num_pages) * nr * lpp,
          retrieval_bytes_, dt, d);
    }
    add_kv(streaming_store_, srows, streaming_bytes_);
  }
  bytes_ = retrieval_bytes_ + streaming_bytes_;
  std::vector<int32_t> cls, slot;
  for (int l = 0; l < config.n_layers; ++l) {
    LSERVE_CHECK(static_cast<int>(heads_.cls[l].size()) == config.n_kv_heads,
                 "head map layer {} has {} KV heads, the model {}", l, heads_.cls[l].size(),
                 config.n_kv_heads);
    for (int h = 0; h < config.n_kv_heads; ++h) {
      cls.push_back(heads_.cls[l][h] == HeadClass::kRetrieval ? 0 : 1);
      slot.push_back(heads_.slot[l][h]);
    }
  }
  head_class_ = backend.alloc(DType::I32, config.n_layers, config.n_kv_heads);
  head_slot_ = backend.alloc(DType::I32, config.n_layers, config.n_kv_heads);
  backend.write(head_class_, cls.data());
  backend.write(head_slot_, slot.data());
  if (config.num_sel_slots > 0) {
    const int64_t rows = sel_row(config.num_sel_slots, 0, 0);
    sel_blocks_ = backend.alloc(DType::I32, rows, max_sel_pages());
    sel_count_ = backend.alloc(DType::I32, rows, 1);
    bytes_ += static_cast<int64_t>(sel_blocks_.nbytes() + sel_count_.nbytes());
    if (config.sparse.selector_drift > 0) {
      sel_query_ = backend.alloc(backend.compute_dtype(), sel_query_row(config.num_sel_slots, 0, 0),
                                 config.head_dim);
      bytes_ += static_cast<int64_t>(sel_query_.nbytes());
    }
  }
}

}  // namespace lserve
