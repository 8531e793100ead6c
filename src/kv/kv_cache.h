// The KV storage of all layers, allocated on a backend. Holds the data only; which pages belong to
// which sequence is decided by the engine (BlockManager) and passed to ops through StepPlan.
#pragma once

#include <vector>

#include "backend/tensor.h"
#include "kv/kv_layout.h"

namespace lserve {

class Backend;

struct KvCacheConfig {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int page_size = 64;          // P
  int logical_page_size = 16;  // L, granularity of the key statistics
  int num_pages = 0;           // retrieval pool pages
  int num_stream_pages = 0;    // streaming pool pages
};

class KvCache {
 public:
  KvCache(Backend& backend, const KvCacheConfig& config, HeadMap heads);

  const KvCacheConfig& config() const { return config_; }
  const HeadMap& heads() const { return heads_; }
  const KvPoolLayout& layout(HeadClass c) const {
    return c == HeadClass::kRetrieval ? retrieval_ : streaming_;
  }
  int page_size() const { return config_.page_size; }
  int logical_pages_per_page() const { return config_.page_size / config_.logical_page_size; }

  // [num_pages * heads * P, head_dim] storage of `layer` in the pool of class `c`.
  Tensor& k(HeadClass c, int layer) { return pool(c).k[layer]; }
  Tensor& v(HeadClass c, int layer) { return pool(c).v[layer]; }
  // Retrieval pool key bounds, [num_pages * heads * (P/L), head_dim] each.
  Tensor& kmin(int layer) { return retrieval_store_.kmin[layer]; }
  Tensor& kmax(int layer) { return retrieval_store_.kmax[layer]; }

  // Bytes of device/host memory the cache holds (K, V and statistics).
  int64_t bytes() const { return bytes_; }

 private:
  struct Store {
    std::vector<Tensor> k, v, kmin, kmax;
  };
  Store& pool(HeadClass c) { return c == HeadClass::kRetrieval ? retrieval_store_ : streaming_store_; }

  KvCacheConfig config_;
  HeadMap heads_;
  KvPoolLayout retrieval_, streaming_;
  Store retrieval_store_, streaming_store_;
  int64_t bytes_ = 0;
};

}  // namespace lserve
