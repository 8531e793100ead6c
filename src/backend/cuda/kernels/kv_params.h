// Device view of one layer of the KV cache, shared by the append, selector and attention kernels.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "core/host_device.h"

namespace lserve::cuda {

using bf16 = __nv_bfloat16;

// One pool's K and V of one layer as the kernels address them: row (page * n + slot) * P + pos % P
// of head_dim elements. bf16 elements, or (fp8) E4M3 bytes whose value is element * the row's
// f32 scale (kv/kv_dtype.h: scale = max|x| / 448 over the row).
struct KvPoolView {
  void* k;
  void* v;
  float* k_scale;  // fp8 only: [rows]
  float* v_scale;
  int32_t n;  // heads of this layer in the pool
};

struct LayerKv {
  void* k_ret;  // retrieval pool [pages][n_ret][P][d]
  void* v_ret;
  float* k_scale_ret;  // fp8 only: [pages][n_ret][P]
  float* v_scale_ret;
  bf16* kmin;  // [pages][n_ret][P/L][d] (the key pool itself when L == 1, never with fp8)
  bf16* kmax;
  void* k_str;  // streaming pool [pages][n_str][P][d]
  void* v_str;
  float* k_scale_str;
  float* v_scale_str;
  int64_t rows_ret;  // rows of each retrieval pool ([pages * n_ret * P, d])
  int64_t rows_str;
  int32_t n_ret;
  int32_t n_str;
  int32_t fp8;                // elements are E4M3 bytes with a scale per row (else bf16)
  const int32_t* head_class;  // [n_kv_heads]: 0 retrieval, 1 streaming
  const int32_t* head_slot;   // [n_kv_heads]: index within its pool
  int32_t page_size;
  int32_t logical_page_size;
  int32_t head_dim;

  LSERVE_HD KvPoolView pool(bool streaming) const {
    return streaming ? KvPoolView{k_str, v_str, k_scale_str, v_scale_str, n_str}
                     : KvPoolView{k_ret, v_ret, k_scale_ret, v_scale_ret, n_ret};
  }
};

}  // namespace lserve::cuda
