// Token sampling: one CTA of 1024 threads per logits row, following backend/sampling.h to the bit
// (the same integer weights, cuts and draw as the host reference, through its shared helpers).
//
// A row (2^17 f32 logits and more) does not fit in shared memory, so the stages stream it from
// global memory (L2 after the first pass), and with one CTA a row a pass costs its instructions:
// the design counts passes and work per token.
//   1. edit index: edits are applied as tokens are read, never written (the row stays raw, so the
//      sampled token's raw logprob is still there): a bitmap of the edited ids and a rank
//      directory turn "is this id edited, and by which edit" into a shared load.
//   2. first pass: the argmax of the edited row (greedy's answer; m for the weights), the raw
//      row's log-sum-exp and best tokens (logprobs), and the top-k select's first digit.
//   3. top-k: an 8-bit radix select on the keys, ties cut by id (a block find). As soon as the
//      tokens at or above the chosen bins fit in shared memory (kListCap), they are gathered there
//      (1 pass) and everything after runs on that list, never reading the row again.
//   4. top-p: a radix select weighted by the fixed-point weights, with the same gathering.
//      Histograms are integer sums, so the result does not depend on thread timing.
//   5. the draw: a block find over the kept weights in id order.
// Passes over the row (at most 3 more a select when the candidates stay too many to gather, 1
// more where a cut falls inside a run of equal logits): greedy 1; temperature or min-p only 2;
// top-k <= kListCap, with any top-p, 2 (when the first digit already narrows the candidates to
// kListCap, as for top-k 40 of 128K) to 5; top-p alone 3 (a nucleus of up to ~kListCap) to 6;
// top-k > kListCap with top-p up to 9. Each pass costs one SM ~20-60 us for 128K tokens (it is
// instruction-bound: one CTA a row); measured on an H200 at 128256 tokens, one row: greedy 26 us,
// temperature 91 us, top-k 40 71-77 us, top-p 0.9 154 us (a peaked row) to 350 us (a flat one).
//
// Files: sampling_block.cuh (constants, shared memory, block reductions and scans),
// sampling_source.cuh (stage 1 and reading the row or the list), sampling_select.cuh (the radix
// selects of stages 3 and 4), and this one (the first pass with the logprobs, the draw, the
// kernel).
#pragma once

#include "backend/cuda/kernels/sampling_select.cuh"

namespace lserve::cuda::sampling_kernel {

// --- the stages -------------------------------------------------------------------------------

// The parameters of the weights of one row.
struct Weights {
  Cut topk;
  float m, temperature, floor_p;
  // Keys below this weigh 0 for sure (more than 29 temperatures under the maximum, so w < e^-28.9
  // < 2^-40, whatever the rounding): at low temperatures much of a row, skipped without an
  // exponential.
  uint32_t zero_below;
  // W of a token after top-k and min-p (0 when they drop it), and in the top-k set.
  __device__ __forceinline__ WZ weigh(int id, uint32_t key) const {
    if (key < zero_below || !topk.has(key, id)) return {};
    const float w = sampling::sample_w(sampling::key_logit(key), m, temperature);
    const u64 z = sampling::fixed_weight(w);
    return {w >= floor_p ? z : 0, z};
  }
  __device__ __forceinline__ u64 kept(int id, uint32_t key) const { return weigh(id, key).w; }
};

template <typename Src>
__device__ __forceinline__ int draw(const Src& src, const Weights& wt, const Cut& top_p,
                                    const SampleRow& row, Smem& s) {
  return block_find(
      src, [=](int id, uint32_t key) -> u64 { return top_p.has(key, id) ? wt.kept(id, key) : 0; },
      [&](u64 total) { return sampling::draw_target(row, total); }, s);
}

template <typename Src>
__device__ __forceinline__ int finish_top_p(const Src& src, const Weights& wt, u64 target,
                                            const Selected& sel, const SampleRow& row, Smem& s) {
  auto weigh = [=](int id, uint32_t key) { return wt.weigh(id, key); };
  if constexpr (Src::kIsRow) {
    if (sel.gathered) {
      const ListSource list{s.list, s.list_size};
      const Selected more = radix_select<true>(list, weigh, target, sel.next, false, s);
      return finish_top_p(list, wt, target, more, row, s);
    }
  }
  const u64 w_at = sampling::fixed_weight(
      sampling::sample_w(sampling::key_logit(sel.cut.key), wt.m, wt.temperature));
  return draw(src, wt, cut_ties(src, sel, weigh, target, w_at, s), row, s);
}

// Top-p and the draw over the top-k set (wt.topk's members in src). Returns the token.
template <typename Src>
__device__ __forceinline__ int top_p_and_draw(const Src& src, const Weights& wt,
                                              const SampleRow& row, Smem& s) {
  if (sampling::top_p_target(row.top_p, 1) == 0) return draw(src, wt, Cut{}, row, s);
  // The first digit's pass also sums Z (the top-k set's weight), which sets the target.
  auto weigh = [=](int id, uint32_t key) { return wt.weigh(id, key); };
  const Totals t = radix_pass<true, Src::kIsRow, true>(src, 24, 0u, weigh, s);
  const u64 target = sampling::top_p_target(row.top_p, t.side);
  if (target > t.weight) return draw(src, wt, Cut{}, row, s);
  const Selected sel = radix_select<true>(src, weigh, target, SelectState{}, true, s);
  return finish_top_p(src, wt, target, sel, row, s);
}

// Inserts the warp's candidates c (one a lane) into its descending list of n_top in shared memory
// (entry i the i-th best; entries past n_top hold the overflow, still descending). The list lives
// in shared memory, not registers, for the first pass's register budget.
__device__ __forceinline__ void top_insert(u64 c, int n_top, u64* list) {
  unsigned cand = __ballot_sync(kFull, c > list[n_top - 1]);
  while (cand) {
    const int src = __ffs(cand) - 1;
    const u64 v = __shfl_sync(kFull, c, src);
    const u64 mine = list[lane_id()];
    const int pos = __popc(__ballot_sync(kFull, mine > v));
    const u64 up = __shfl_up_sync(kFull, mine, 1);
    if (lane_id() > pos) {
      list[lane_id()] = up;
    } else if (lane_id() == pos) {
      list[lane_id()] = v;
    }
    __syncwarp();
    cand &= ~(1u << src);
    cand &= __ballot_sync(kFull, c > list[n_top - 1]);
  }
}

// (key desc, id asc) as one integer, so that ties never need a second look.
__device__ __forceinline__ u64 ranked(uint32_t key, int id) {
  return (static_cast<u64>(key) << 32) | static_cast<uint32_t>(~id);
}
__device__ __forceinline__ int ranked_id(u64 r) {
  return static_cast<int>(~static_cast<uint32_t>(r));
}

struct FirstPass {
  u64 best = 0;               // ranked() of the edited row's best token (this thread's)
  float raw_max = -INFINITY;  // online log-sum-exp of the raw row
  float raw_sum = 0;          // at most n / 1024 terms of at most 1: float is exact enough for 1e-5
};

// The first pass over the row, its loop specialised for the work the row asks (greedy rows, the
// most common, then do only the argmax). kTopK: the top-k select's first digit into s.count;
// kLogprobs: the raw row's log-sum-exp and n_top best into s.warp_top.
template <bool kTopK, bool kLogprobs>
__device__ __forceinline__ FirstPass first_pass(const RowSource& src, int n_top, Smem& s) {
  FirstPass fp;
  walk_segment<RowSource::kVec>(src, [&](int p, bool valid, float raw) {
    const uint32_t key = valid ? src.key(p, raw) : 0u;
    if (valid) fp.best = max(fp.best, ranked(key, p));
    if constexpr (kTopK) hist_count(s, key >> 24, valid);
    if constexpr (kLogprobs) {
      const float r = sampling::clean_logit(raw);
      if (valid && r != -INFINITY) {
        if (r > fp.raw_max) {
          fp.raw_sum *= expf(fp.raw_max - r);
          fp.raw_max = r;
        }
        fp.raw_sum += expf(r - fp.raw_max);
      }
      if (n_top > 0) {
        top_insert(valid ? ranked(sampling::logit_key(r), p) : 0, n_top, s.warp_top[warp_id()]);
      }
    }
  });
  return fp;
}

// Step 3 of the algorithm (top-k, min-p, top-p, the draw) for a row that is not greedy, after the
// first pass. Returns the token.
__device__ __forceinline__ int sample(const RowSource& src, Weights wt, int k, bool top_k,
                                      const SampleRow& row, Smem& s) {
  wt.temperature = row.temperature;
  wt.floor_p = sampling::min_p_floor(row.min_p);
  wt.zero_below = sampling::logit_key(wt.m - 29.0f * wt.temperature);
  if (!top_k) return top_p_and_draw(src, wt, row, s);
  auto one = [](int, uint32_t) { return WZ{1, 0}; };
  const u64 target = static_cast<u64>(k);
  const Selected sel = radix_select<false>(src, one, target, SelectState{}, true, s);
  if (sel.gathered) {
    const ListSource list{s.list, s.list_size};
    const Selected more = radix_select<false>(list, one, target, sel.next, false, s);
    wt.topk = cut_ties(list, more, one, target, 1, s);
    return top_p_and_draw(list, wt, row, s);
  }
  const Cut cut = cut_ties(src, sel, one, target, 1, s);
  if (k <= kListCap) {
    gather(src, cut, s);
    return top_p_and_draw(ListSource{s.list, s.list_size}, wt, row, s);
  }
  wt.topk = cut;
  return top_p_and_draw(src, wt, row, s);
}

// One CTA (kThreads) a row; the kernel's header comment gives the stages.
__global__ void __launch_bounds__(kThreads, 1)
    sample_kernel(const float* logits, int64_t ld, const SampleRow* rows, const LogitEdit* edits,
                  SampledToken* out) {
  griddep_wait();
  griddep_launch_dependents();
  __shared__ Smem s;
  const SampleRow row = rows[blockIdx.x];
  const float* raw_row = logits + static_cast<int64_t>(blockIdx.x) * ld;
  SampledToken& o = out[blockIdx.x];
  const int n = static_cast<int>(min(static_cast<int64_t>(row.vocab), ld));

  if (threadIdx.x < kMaxTopLogprobs) {
    o.top_ids[threadIdx.x] = -1;
    o.top_logprobs[threadIdx.x] = 0.0f;
  }
  if (n < 1 || !build_edit_index(row, edits, n, s)) {
    if (threadIdx.x == 0) {
      o.token = -1;
      o.logprob = 0.0f;
      o.n_top = 0;
    }
    return;
  }
  const RowSource src{raw_row, n, EditIndex{&s, edits, s.max_edit}};
  if (threadIdx.x < kWarps) s.row_segment[threadIdx.x] = compute_segment(src, threadIdx.x);
  const bool greedy = sampling::is_greedy(row);
  const int k = sampling::top_k_count(row, n);
  const bool top_k = !greedy && k < n;
  const bool want_lp = row.logprobs >= 0;
  const int n_top = want_lp ? min(min(row.logprobs, kMaxTopLogprobs), n) : 0;

  // --- first pass -----------------------------------------------------------------------------
  if (top_k && threadIdx.x < 256) s.count[threadIdx.x] = 0;
  s.warp_top[warp_id()][lane_id()] = 0;
  __syncthreads();
  FirstPass fp;
  if (want_lp) {
    if (top_k) {
      fp = first_pass<true, true>(src, n_top, s);
    } else {
      fp = first_pass<false, true>(src, n_top, s);
    }
  } else if (top_k) {
    fp = first_pass<true, false>(src, n_top, s);
  } else {
    fp = first_pass<false, false>(src, n_top, s);
  }
  u64 best = fp.best;
  const float raw_max = fp.raw_max, raw_sum = fp.raw_sum;
  best = block_all(best, Max{}, s.red.u);
  // Kept in shared memory: the sampling stages need every register.
  if (threadIdx.x == 0) s.best = best;
  if (want_lp) {
    const float mx = block_all(raw_max, Max{}, s.red.f);
    const double part =
        raw_sum > 0 ? static_cast<double>(raw_sum) * exp(static_cast<double>(raw_max) - mx) : 0.0;
    const double sum = block_all(part, Add{}, s.red.d);
    if (threadIdx.x == 0) s.lse = mx + log(sum);
    if (n_top > 0) {
      __syncthreads();
      if (warp_id() == 0) {
        // 32-way merge of the warps' descending lists; entries are distinct.
        int head = 0;
        for (int i = 0; i < n_top; ++i) {
          const u64 mine = head < n_top ? s.warp_top[lane_id()][head] : 0;
          const u64 top = warp_all(mine, Max{});
          if (mine == top) ++head;
          if (lane_id() == 0) s.top[i] = top;
        }
      }
    }
    __syncthreads();
  }

  int token = ranked_id(best);
  if (!greedy) {
    Weights wt;
    wt.m = sampling::key_logit(static_cast<uint32_t>(best >> 32));
    token = sample(src, wt, k, top_k, row, s);
    if (token < 0) token = ranked_id(s.best);  // unreachable: the best token weighs 2^40
  }

  // --- results --------------------------------------------------------------------------------
  if (threadIdx.x == 0) {
    o.token = token;
    o.logprob = want_lp ? static_cast<float>(sampling::clean_logit(raw_row[token]) - s.lse) : 0.0f;
    o.n_top = n_top;
  }
  if (threadIdx.x < n_top) {
    const u64 r = s.top[threadIdx.x];
    o.top_ids[threadIdx.x] = ranked_id(r);
    o.top_logprobs[threadIdx.x] =
        static_cast<float>(sampling::key_logit(static_cast<uint32_t>(r >> 32)) - s.lse);
  }
}

}  // namespace lserve::cuda::sampling_kernel
