// A deliberately simple attention kernel over the same work items as attention.cuh: one warp per
// tile row, keys one at a time, f32 throughout. Tests run it beside the tensor-core kernel on the
// same plan so a mismatch points at the fast kernel, not at planning. It is also the kernel of
// head_dim 256 (Gemma 3), which the fast kernels do not cover (they serve 64 and 128): any D that
// is a multiple of 32, with merge_reference_kernel combining its split-KV partial results (the
// fast merge_kernel holds D / 4 <= 32 threads per row).
// Masking is the fast kernels' rule: causal, and for streaming heads sink (p.sink) + window
// (the sequence table's stream_window); a model's sliding window is sink 0 and that window
// (CudaBackend::attention hands the kernel a table holding it).
#pragma once

#include "backend/cuda/kernels/attention.cuh"
#include "backend/cuda/kernels/attention_merge.cuh"

namespace lserve::cuda {

constexpr int kReferenceThreads = 128;

template <int D>
__global__ void __launch_bounds__(kReferenceThreads) attention_reference_kernel(AttnParams p) {
  static_assert(D % 32 == 0, "a lane holds D / 32 channels");
  griddep_wait();
  griddep_launch_dependents();
  __shared__ int32_t list[kReferenceMaxSel + 2];
  AttnWork w;
  if (!cta_work(p, &w)) return;
  const SeqInfo s = p.step.seqs[w.seq];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  const KeyMap km = work_key_map(p, w, s, list);
  const bool streaming = w.kind == kStreamPages;
  const KvPoolView pool = p.kv.pool(streaming);
  const bool fp8 = p.kv.fp8;
  const int32_t n_pool = pool.n;
  const int32_t hs = p.kv.head_slot[w.kv_head];
  const int32_t P = p.kv.page_size;
  constexpr int CPL = D / 32;

  for (int r = warp; r < w.q_count * w.rg; r += n_warps) {
    const int64_t token = s.q_offset + w.q_first + r / w.rg;
    const int32_t head = w.head0 + r % w.rg;
    const int32_t qp = s.start_pos + w.q_first + r / w.rg;
    float q[CPL], acc[CPL];
    for (int c = 0; c < CPL; ++c) {
      q[c] = to_f32(p.q[(token * p.n_heads + head) * D + lane * CPL + c]);
      acc[c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int range = 0; range < 2; ++range) {
      const int32_t end = km.range_end(w, range);
      for (int32_t k = w.k_begin[range]; k < end; ++k) {
        const int32_t* entry = nullptr;
        const int32_t kp = km.locate(k, &entry);
        const int32_t page = kp >= 0 ? *entry : 0;
        bool vis = kp >= 0 && kp <= qp;
        if (streaming) {
          vis = vis && (kp < p.sink ||
                        static_cast<int64_t>(kp) > static_cast<int64_t>(qp) - s.stream_window);
        }
        if (!vis) continue;
        const int64_t row = (static_cast<int64_t>(page) * n_pool + hs) * P + kp % P;
        float dot = 0.0f;
        for (int c = 0; c < CPL; ++c)
          dot += q[c] * kv_element(pool.k, row * D + lane * CPL + c, fp8);
        const float ks = fp8 ? pool.k_scale[row] : 1.0f, vsc = fp8 ? pool.v_scale[row] : 1.0f;
        const float sc = warp_sum(dot) * ks * p.scale_log2;
        const float mn = fmaxf(m, sc);
        const float alpha = exp2f(m - mn), pw = exp2f(sc - mn);
        l = l * alpha + pw;
        for (int c = 0; c < CPL; ++c) {
          acc[c] = acc[c] * alpha + pw * vsc * kv_element(pool.v, row * D + lane * CPL + c, fp8);
        }
        m = mn;
      }
    }
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (int c = 0; c < CPL; ++c) {
      if (w.partial < 0) {
        p.out[(token * p.n_heads + head) * D + lane * CPL + c] = to_bf16(acc[c] * inv);
      } else {
        p.part_o[(static_cast<int64_t>(w.partial) * 16 + r) * D + lane * CPL + c] = acc[c] * inv;
      }
    }
    if (w.partial >= 0 && lane == 0)
      p.part_lse[w.partial * 16 + r] = l > 0.0f ? m + log2f(l) : -INFINITY;
  }
}

// Combines split-KV partial results into p.out like merge_kernel, for any D: one CTA per merge
// item (or, items null, per unit of a device-planned step, derived as the attention CTAs did),
// one thread per (row, channel) at a time, the log2-sum-exp weighted mean of the row's pieces.
template <int D>
__global__ void __launch_bounds__(kReferenceThreads)
    merge_reference_kernel(AttnParams p, const MergeItem* items) {
  griddep_wait();
  griddep_launch_dependents();
  MergeItem it;
  if (!merge_item(p, items, &it)) return;
  const SeqInfo s = p.step.seqs[it.seq];
  const int32_t rows = it.q_count * it.rg;
  for (int32_t idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const int32_t r = idx / D, c = idx % D;
    float mm = -INFINITY;
    for (int32_t i = 0; i < it.count; ++i) {
      mm = fmaxf(mm, p.part_lse[static_cast<int64_t>(it.first + i) * 16 + r]);
    }
    float acc = 0.0f, wsum = 0.0f;
    if (mm != -INFINITY) {
      for (int32_t i = 0; i < it.count; ++i) {
        const int64_t piece = static_cast<int64_t>(it.first + i) * 16 + r;
        const float l = p.part_lse[piece];
        const float f = l == -INFINITY ? 0.0f : exp2f(l - mm);
        wsum += f;
        acc += f * p.part_o[piece * D + c];
      }
    }
    const int64_t token = s.q_offset + it.q_first + r / it.rg;
    p.out[(token * p.n_heads + it.head0 + r % it.rg) * D + c] =
        to_bf16(wsum > 0.0f ? acc / wsum : 0.0f);
  }
}

}  // namespace lserve::cuda
