// Split-KV merging: decode items split over keys write normalised partial outputs and their
// log2-sum-exps (attention.cuh); merge_kernel combines each row's pieces. merge_item is shared
// with the reference kernel's own merge (attention_reference.cuh).
#pragma once

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/params.h"

namespace lserve::cuda {

// This CTA's merge item: the host-planned list's entry, or (items == null, a device-planned
// decode step) the one derived from the step tables for unit blockIdx.x, as the attention CTAs
// derived theirs. False: nothing to merge (no item, or one piece that wrote the output itself);
// the whole CTA returns together.
__device__ __forceinline__ bool merge_item(const AttnParams& p, const MergeItem* items,
                                           MergeItem* it) {
  if (items) {
    *it = items[blockIdx.x];
    return true;
  }
  AttnWork w;
  int32_t pieces = 0;
  if (!decode_work(p.grid, p.step.seqs, p.kv.head_class, blockIdx.x, 0, &w, &pieces) ||
      pieces <= 1) {
    return false;
  }
  *it = MergeItem{w.seq,   w.q_first, w.q_count,
                  w.head0, w.rg,      static_cast<int32_t>(blockIdx.x) * p.grid.splits,
                  pieces,  0};
  return true;
}

// Rows [blockIdx.y * R, +R) of split item blockIdx.x, R = THREADS / G with G = D / 4 threads per
// row, each owning 4 channels: the log-sum-exp weighted mean of the row's partials. The kernel is
// a chain of dependent loads, so it is built for few round trips: the G threads of a row load
// its log-sum-exps G at a time (one round trip for up to G pieces) and reduce the maximum with
// shuffles; then, G pieces at a time, each thread computes one piece's weight, the weights go
// round the group by shuffles, and every thread issues its loads of all G pieces before the
// first one is used. items == null: the items of a device-planned decode step, derived per unit
// as the attention CTAs did.
template <int D, int THREADS>
__global__ void __launch_bounds__(THREADS) merge_kernel(AttnParams p, const MergeItem* items) {
  griddep_wait();
  griddep_launch_dependents();
  constexpr int G = D / 4, kRows = THREADS / G;
  static_assert(THREADS % G == 0 && 16 % kRows == 0 && G <= 32, "merge thread layout");
  MergeItem it;
  if (!merge_item(p, items, &it)) return;
  const int j = threadIdx.x % G, r = blockIdx.y * kRows + threadIdx.x / G;
  // Whole groups leave together (r is the same for a group's G threads); the shuffles below stay
  // within a group (gmask), so they never wait on threads that left.
  if (r >= it.q_count * it.rg) return;
  const unsigned gmask = G == 32 ? 0xffffffffu : ((1u << G) - 1) << (threadIdx.x % 32 / G * G);
  const float* lse = p.part_lse + static_cast<int64_t>(it.first) * 16 + r;  // stride 16 rows
  const float4* po =
      reinterpret_cast<const float4*>(p.part_o) + (static_cast<int64_t>(it.first) * 16 + r) * G + j;
  constexpr int64_t kPieceStride = 16 * G;  // float4s from one piece's row to the next's

  float mm = -INFINITY;
  for (int i = j; i < it.count; i += G) mm = fmaxf(mm, lse[i * 16]);
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) mm = fmaxf(mm, __shfl_xor_sync(gmask, mm, o, G));

  float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float wsum = 0.0f;
  if (mm != -INFINITY) {
    for (int base = 0; base < it.count; base += G) {
      const int n = min(G, it.count - base);
      const float l = j < n ? lse[(base + j) * 16] : -INFINITY;
      const float f = l == -INFINITY ? 0.0f : exp2f(l - mm);
      wsum += f;
      float4 v[G];
#pragma unroll
      for (int u = 0; u < G; ++u) {
        if (u < n) v[u] = po[(base + u) * kPieceStride];
      }
#pragma unroll
      for (int u = 0; u < G; ++u) {
        const float fu = __shfl_sync(gmask, f, u, G);
        if (u < n) {
          acc.x += fu * v[u].x;
          acc.y += fu * v[u].y;
          acc.z += fu * v[u].z;
          acc.w += fu * v[u].w;
        }
      }
    }
  }
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) wsum += __shfl_xor_sync(gmask, wsum, o, G);
  const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
  const SeqInfo s = p.step.seqs[it.seq];
  const int64_t token = s.q_offset + it.q_first + r / it.rg;
  auto* dst = reinterpret_cast<__nv_bfloat162*>(
      p.out + (token * p.n_heads + it.head0 + r % it.rg) * D + 4 * j);
  dst[0] = __floats2bfloat162_rn(acc.x * inv, acc.y * inv);
  dst[1] = __floats2bfloat162_rn(acc.z * inv, acc.w * inv);
}

}  // namespace lserve::cuda
