// Device view of one layer of the KV cache, shared by the append, selector and attention kernels.
#pragma once

#include <cstdint>

namespace lserve::cuda {

template <typename T>
struct LayerKv {
  T* k_ret;  // retrieval pool [pages][n_ret][P][d]
  T* v_ret;
  T* kmin;  // [pages][n_ret][P/L][d]
  T* kmax;
  T* k_str;  // streaming pool [pages][n_str][P][d]
  T* v_str;
  int32_t n_ret;
  int32_t n_str;
  const int32_t* head_class;  // [n_kv_heads]: 0 retrieval, 1 streaming
  const int32_t* head_slot;   // [n_kv_heads]: index within its pool
  int32_t page_size;
  int32_t logical_page_size;
  int32_t head_dim;
};

}  // namespace lserve::cuda
