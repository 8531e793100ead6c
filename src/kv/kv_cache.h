// The KV storage of all layers, allocated on a backend: two pools (retrieval and streaming heads),
// the retrieval pool's per-logical-page key bounds, and the page selections kept between selector
// refreshes. Holds data only; which pages belong to which sequence is decided by the engine
// (BlockManager) and passed to ops through StepPlan.
#pragma once

#include <vector>

#include "backend/tensor.h"
#include "kv/kv_dtype.h"
#include "kv/kv_layout.h"
#include "sparse/sparse_config.h"

namespace lserve {

class Backend;

struct KvCacheConfig {
  int n_layers = 0;
  int n_heads = 0;  // query heads (for query-head selection granularity)
  int n_kv_heads = 0;
  int head_dim = 0;
  int num_pages = 0;               // retrieval pool pages
  int num_stream_pages = 0;        // streaming pool pages
  int num_sel_slots = 0;           // sequences that can keep a page selection at once
  SparseAttentionConfig sparse;    // page sizes, windows, budget, selector settings
  KvDtype dtype = KvDtype::kAuto;  // how appended K/V rows are rounded (kv_dtype.h)
};

class KvCache {
 public:
  KvCache(Backend& backend, const KvCacheConfig& config, HeadMap heads);

  const KvCacheConfig& config() const { return config_; }
  const SparseAttentionConfig& sparse() const { return config_.sparse; }
  const HeadMap& heads() const { return heads_; }
  const KvPoolLayout& layout(HeadClass c) const {
    return c == HeadClass::kRetrieval ? retrieval_ : streaming_;
  }
  int page_size() const { return config_.sparse.page_size; }
  int logical_page_size() const { return config_.sparse.logical_page_size; }
  int logical_pages_per_page() const { return page_size() / logical_page_size(); }
  // Heads a selection is kept for: KV heads, or query heads with query-head granularity.
  int sel_heads() const;
  int max_sel_pages() const { return config_.sparse.max_selected_pages(); }

  // [num_pages * heads * P, head_dim] storage of `layer` in the pool of class `c`, elements of
  // storage_dtype().
  Tensor& k(HeadClass c, int layer) { return pool(c).k[layer]; }
  Tensor& v(HeadClass c, int layer) { return pool(c).v[layer]; }
  // F32 [num_pages * heads * P, 1]: each stored row's scale where the pool holds fp8 (the value
  // is element * scale); empty tensors otherwise.
  Tensor& k_scale(HeadClass c, int layer) { return pool(c).k_scale[layer]; }
  Tensor& v_scale(HeadClass c, int layer) { return pool(c).v_scale[layer]; }
  // What the K/V pools hold: the backend's compute dtype, or F8E4M3 where the backend stores
  // `--kv-cache-dtype fp8` natively (Backend::kv_storage_dtype).
  DType storage_dtype() const { return storage_; }
  const KvRowBytes& row_bytes() const { return row_bytes_; }
  // Retrieval pool key bounds, [num_pages * heads * (P/L), head_dim] each.
  Tensor& kmin(int layer) { return retrieval_store_.kmin[layer]; }
  Tensor& kmax(int layer) { return retrieval_store_.kmax[layer]; }
  // Selected block indices, I32 [slots * layers * sel_heads, max_sel_pages], ascending, and their
  // counts, I32 [slots * layers * sel_heads, 1]. Row of (slot, layer, head): see sel_row().
  Tensor& sel_blocks() { return sel_blocks_; }
  // The head map on the backend, I32 [n_layers, n_kv_heads]: class (0 retrieval, 1 streaming)
  // and slot within the class's pool.
  const Tensor& head_class_table() const { return head_class_; }
  const Tensor& head_slot_table() const { return head_slot_; }
  Tensor& sel_count() { return sel_count_; }
  // The query each query head had when its selection row was last computed, [slots * layers *
  // n_heads, head_dim] (compute dtype), for drift-triggered refreshes (selector_drift > 0).
  Tensor& sel_query() { return sel_query_; }
  int64_t sel_query_row(int slot, int layer, int q_head) const {
    return (static_cast<int64_t>(slot) * config_.n_layers + layer) * config_.n_heads + q_head;
  }
  int64_t sel_row(int slot, int layer, int head) const {
    return (static_cast<int64_t>(slot) * config_.n_layers + layer) * sel_heads() + head;
  }

  // Bytes of memory the cache holds (K, V, statistics, selections).
  int64_t bytes() const { return bytes_; }
  int64_t bytes(HeadClass c) const {
    return c == HeadClass::kRetrieval ? retrieval_bytes_ : streaming_bytes_;
  }
  // Bytes of one page of the pool of class c, over all layers.
  int64_t blocks_pool_page_bytes(HeadClass c) const {
    const int pages = layout(c).num_pages;
    return pages > 0 ? bytes(c) / pages : 0;
  }

 private:
  struct Store {
    std::vector<Tensor> k, v, k_scale, v_scale, kmin, kmax;
  };
  Store& pool(HeadClass c) {
    return c == HeadClass::kRetrieval ? retrieval_store_ : streaming_store_;
  }

  KvCacheConfig config_;
  HeadMap heads_;
  DType storage_ = DType::F32;
  KvRowBytes row_bytes_;
  KvPoolLayout retrieval_, streaming_;
  Store retrieval_store_, streaming_store_;
  Tensor sel_blocks_, sel_count_, sel_query_;
  Tensor head_class_, head_slot_;
  int64_t bytes_ = 0, retrieval_bytes_ = 0, streaming_bytes_ = 0;
};

// Bytes one page takes in each pool over all layers (K, V and, for retrieval, key bounds).
struct KvPageBytes {
  int64_t retrieval = 0;
  int64_t streaming = 0;
};
KvPageBytes kv_page_bytes(const HeadMap& heads, const SparseAttentionConfig& sparse,
                          const KvRowBytes& row);

}  // namespace lserve
