// The sampling kernel's (sampling.cuh) block-wide building blocks: its constants, shared memory,
// and reductions and scans over the 1,024 threads of a row's CTA.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "backend/cuda/kernels/common.cuh"
#include "backend/sampling.h"

namespace lserve::cuda::sampling_kernel {

using u64 = unsigned long long;  // what the shuffles and atomics take

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFull = 0xffffffffu;
// Edited-token flags cover ids below 2^18 (larger vocabularies search the sorted edit list).
constexpr int kBitmapWords = 8192;
constexpr int kBitmapIds = kBitmapWords * 32;
constexpr int kRankWords = 8;  // bitmap words per rank-directory entry: one entry per thread
// Most tokens gathered into shared memory (8 KiB).
constexpr int kListCap = 1024;
static_assert(kBitmapWords / kRankWords == kThreads);
static_assert(kListCap == kThreads, "the list sort keeps one entry per thread");

struct Segment {
  int begin, end;  // positions [begin, end)
  int qa, qe;      // the aligned run inside, in kVecs; the rest (3 + 3 tokens at most) is scalar
};

struct Smem {
  uint32_t edited[kBitmapWords];
  uint32_t rank[kBitmapWords / kRankWords];  // index in the edit list of the first flagged id
  union {
    u64 list[kListCap];        // gathered tokens: (id << 32) | key, by id
    u64 warp_top[kWarps][32];  // each warp's best raw tokens, (key << 32) | ~id, descending
  };
  uint32_t count[256];
  // 64-bit bin weights as two halves: a 64-bit shared atomicAdd is a compare-and-swap loop, which
  // the few crowded bins of a first digit would turn into a crawl.
  uint32_t weight_lo[256], weight_hi[256];
  union {
    u64 u[kWarps];
    double d[kWarps];
    float f[kWarps];
    int i[kWarps];
  } red;
  u64 top[kMaxTopLogprobs];
  double lse;
  u64 bin_before;
  uint32_t count_before;
  int bin;
  int found;
  int list_size;
  int max_edit;                 // largest edited token (edits are sorted); -1: none
  Segment row_segment[kWarps];  // the row's segments (segment_of), kept out of the registers
  int edit_begin, edit_end;
  u64 best;
};

__device__ __forceinline__ int lane_id() { return threadIdx.x & 31; }
__device__ __forceinline__ int warp_id() { return threadIdx.x >> 5; }

template <typename T, typename Op>
__device__ __forceinline__ T warp_all(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// op over the block; every thread gets the result. `red` is reusable on return.
template <typename T, typename Op>
__device__ __forceinline__ T block_all(T v, Op op, T* red) {
  v = warp_all(v, op);
  if (lane_id() == 0) red[warp_id()] = v;
  __syncthreads();
  v = warp_all(red[lane_id()], op);
  __syncthreads();
  return v;
}

struct Add {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a > b ? a : b;
  }
};

template <typename T>
__device__ __forceinline__ T warp_inclusive_scan(T x) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(kFull, x, o);
    if (lane_id() >= o) x += y;
  }
  return x;
}

// Exclusive prefix sum over the block in thread order.
__device__ __forceinline__ u64 block_exclusive_scan(u64 v, Smem& s) {
  const u64 x = warp_inclusive_scan(v);
  if (lane_id() == 31) s.red.u[warp_id()] = x;
  __syncthreads();
  const u64 w = s.red.u[lane_id()];
  const u64 wx = warp_inclusive_scan(w);
  const u64 before_warp = __shfl_sync(kFull, wx - w, warp_id());
  __syncthreads();
  return before_warp + x - v;
}

}  // namespace lserve::cuda::sampling_kernel
