// Page selector, two kernels (docs/cuda-backend.md):
//  1. score_pages_kernel: many CTAs, each scoring 8 x pages_per_warp pages of one (sequence,
//     selection head):
//     Quest bound per logical page, max over the group's query heads (kv-head granularity), max
//     over the page's logical pages; written as order-preserving keys.
//  2. top_pages_kernel: one CTA per (sequence, selection head): radix select of the k-th largest
//     key (4 passes of 8 bits), then the winners compacted in page order (equal scores: lower page
//     first) and the current page appended. Matches sparse/page_selection.h exactly.
#pragma once

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/params.h"

namespace lserve::cuda {

constexpr int kTopThreads = 1024;
// Keys a top_pages CTA copies into shared memory (44 KB, inside the default 48 KB with its static
// arrays: 11,264 pages, 720K tokens at P 64); beyond that it reads them from L2 in every pass.
constexpr int kTopSmemKeys = 11264;

__device__ __forceinline__ bool selector_skips(const SelectorParams& p, int32_t u) {
  const int32_t group = p.n_heads / p.n_kv_heads;
  const int32_t kvh = p.per_query_head ? u / group : u;
  return p.kv.head_class[kvh] != 0;  // streaming heads select nothing
}

// The sequence CTA row blockIdx.x serves, or -1 when it has nothing to select (a device-planned
// step's slot that does not refresh at this layer).
__device__ __forceinline__ int32_t selector_seq(const SelectorParams& p) {
  if (p.seq_list) return p.seq_list[blockIdx.x];
  const SeqInfo& s = p.step.seqs[blockIdx.x];
  const bool refresh = (s.flags & kSeqRefresh) && uses_selection(s, p.layer, p.skip_layers);
  return refresh ? static_cast<int32_t>(blockIdx.x) : -1;
}

// A warp scores one physical page at a time: each lane reads 16-byte chunks (8 channels) of kmin
// and kmax; a logical page's D / 8 chunks sit in adjacent lanes, so a warp covers 32 / (D / 8)
// logical pages per pass. The kernel is bound by memory latency at small batches: the CTA's page
// table entries and the query are read in one round, and each warp's next page's loads are
// issued before its current page is scored. A CTA's 8 warps take pages_per_warp pages each,
// interleaved.
template <int D>
__global__ void __launch_bounds__(kSelectorThreads, 2) score_pages_kernel(SelectorParams p) {
  griddep_wait();
  griddep_launch_dependents();
  constexpr int kChunks = D / 8;          // lanes per logical page
  constexpr int kPerPass = 32 / kChunks;  // logical pages per warp pass
  constexpr int kMaxPasses = 2;           // passes whose loads are in flight together
  constexpr int kWarps = kSelectorThreads / 32;
  __shared__ __align__(16) float qs[kSelectorMaxGroup][D];
  __shared__ int32_t page_of[kWarps * kScoreMaxPagesPerWarp];  // the CTA's pages' pool pages
  const int32_t u = blockIdx.y;
  if (selector_skips(p, u)) return;
  const int32_t seq = selector_seq(p);
  if (seq < 0) return;
  const SeqInfo s = p.step.seqs[seq];
  const int32_t group = p.n_heads / p.n_kv_heads;
  const int32_t kvh = p.per_query_head ? u / group : u;
  const int32_t g0 = p.per_query_head ? u % group : 0;
  const int32_t ng = p.per_query_head ? 1 : group;
  const int32_t P = p.kv.page_size, L = p.kv.logical_page_size, lpp = P / L;
  const int32_t n_tokens = s.start_pos + s.q_len;
  const int32_t n_scored = (n_tokens + P - 1) / P - 1;  // the current page is taken, not scored
  const int32_t per_warp =
      p.pages_per_warp > 0 ? p.pages_per_warp
                           : max(1, min(kScoreMaxPagesPerWarp,
                                        (n_scored + kWarps * static_cast<int32_t>(gridDim.z) - 1) /
                                            (kWarps * static_cast<int32_t>(gridDim.z))));
  const int32_t b0 = blockIdx.z * kWarps * per_warp;
  if (b0 >= n_scored) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int32_t hs = p.kv.head_slot[kvh];
  const int32_t chunk = lane % kChunks;
  const int32_t n_pass = (lpp + kPerPass - 1) / kPerPass;
  uint32_t* keys = p.scratch + (static_cast<int64_t>(blockIdx.x) * gridDim.y + u) * p.max_blocks;

  struct Page {
    int32_t b;
    int64_t base;  // row of its first logical page in kmin / kmax
    uint4 lo[kMaxPasses], hi[kMaxPasses];
  };
  auto lp_of = [&](int pass) { return pass * kPerPass + lane / kChunks; };
  auto has_tokens = [&](int32_t b, int32_t lp) {
    return b < n_scored && lp < lpp && b * P + lp * L < n_tokens;
  };
  auto load_pass = [&](const Page& pg, int pass, uint4& lo, uint4& hi) {
    const int32_t lp = lp_of(pass);
    if (has_tokens(pg.b, lp)) {
      lo = *reinterpret_cast<const uint4*>(p.kv.kmin + (pg.base + lp) * D + chunk * 8);
      // One-token logical pages: kmin and kmax are both the key itself (read once).
      hi =
          L == 1 ? lo : *reinterpret_cast<const uint4*>(p.kv.kmax + (pg.base + lp) * D + chunk * 8);
    }
  };
  auto start = [&](int32_t r, Page& pg) {
    pg.b = b0 + r * kWarps + warp;
    pg.base = 0;
    if (pg.b < n_scored)
      pg.base = (static_cast<int64_t>(page_of[pg.b - b0]) * p.kv.n_ret + hs) * lpp;
#pragma unroll
    for (int i = 0; i < kMaxPasses; ++i) {
      if (i < n_pass) load_pass(pg, i, pg.lo[i], pg.hi[i]);
    }
  };
  // Quest bound of this lane's logical page: max over the group's heads of the sum over channels
  // of max(q * kmin, q * kmax).
  auto bound = [&](int32_t b, int pass, const uint4& lo4, const uint4& hi4) {
    const auto* lo2 = reinterpret_cast<const __nv_bfloat162*>(&lo4);
    const auto* hi2 = reinterpret_cast<const __nv_bfloat162*>(&hi4);
    float best = -INFINITY;
    for (int32_t g = 0; g < ng; ++g) {
      const float* q = &qs[g][chunk * 8];
      float part = 0.0f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 l = __bfloat1622float2(lo2[j]), h = __bfloat1622float2(hi2[j]);
        part +=
            fmaxf(q[2 * j] * l.x, q[2 * j] * h.x) + fmaxf(q[2 * j + 1] * l.y, q[2 * j + 1] * h.y);
      }
#pragma unroll
      for (int o = 1; o < kChunks; o <<= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
      best = fmaxf(best, part);
    }
    return has_tokens(b, lp_of(pass)) ? best : -INFINITY;
  };

  // The page table entries of all the CTA's pages and the query, in one round of loads.
  const int32_t n_mine = min(kWarps * per_warp, n_scored - b0);
  for (int i = threadIdx.x; i < n_mine; i += blockDim.x) {
    page_of[i] = p.step.page_indices[s.page_base + b0 + i];
  }
  const int64_t trow = s.q_offset + s.q_len - 1;
  for (int i = threadIdx.x; i < ng * D; i += blockDim.x) {
    const int g = i / D, c = i % D;
    qs[g][c] = to_f32(p.q[(trow * p.n_heads + kvh * group + g0 + g) * D + c]);
  }
  __syncthreads();
  Page cur, next;
  start(0, cur);
  for (int32_t r = 0; r < per_warp && cur.b < n_scored; ++r) {
    if (r + 1 < per_warp) start(r + 1, next);
    float best = -INFINITY;
#pragma unroll
    for (int i = 0; i < kMaxPasses; ++i) {
      if (i < n_pass) best = fmaxf(best, bound(cur.b, i, cur.lo[i], cur.hi[i]));
    }
    // Pages with more logical pages (small L; 32 passes at L 1, P 64, D 128): the rest in
    // groups whose loads are all issued before any is scored, so a page costs a few memory round
    // trips rather than one per pass.
    constexpr int kGroup = 4;
    for (int i = kMaxPasses; i < n_pass; i += kGroup) {
      uint4 l4[kGroup] = {}, h4[kGroup] = {};
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        if (i + j < n_pass) load_pass(cur, i + j, l4[j], h4[j]);
      }
#pragma unroll
      for (int j = 0; j < kGroup; ++j) {
        if (i + j < n_pass) best = fmaxf(best, bound(cur.b, i + j, l4[j], h4[j]));
      }
    }
#pragma unroll
    for (int o = kChunks; o < 32; o <<= 1) {
      best = fmaxf(best, __shfl_xor_sync(0xffffffffu, best, o));
    }
    if (lane == 0) keys[cur.b] = float_order_key(best);
    cur = next;
  }
}

// Exclusive prefix sum over the block (blockDim.x a multiple of 32); *total gets the sum.
__device__ __forceinline__ int32_t top_scan(int32_t v, int32_t* total) {
  __shared__ int32_t warp_sums[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int32_t x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int32_t w = lane < static_cast<int>(blockDim.x / 32) ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive
  }
  __syncthreads();
  const int32_t before = (warp > 0 ? warp_sums[warp - 1] : 0) + x - v;
  *total = warp_sums[blockDim.x / 32 - 1];
  return before;
}

// Dynamic shared memory: min(max_blocks, kTopSmemKeys) keys.
__global__ void __launch_bounds__(kTopThreads) top_pages_kernel(SelectorParams p) {
  griddep_wait();
  griddep_launch_dependents();
  __shared__ int32_t hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ int32_t s_k;
  const int32_t u = blockIdx.y;
  if (selector_skips(p, u)) return;
  const int32_t seq = selector_seq(p);
  if (seq < 0) return;
  const SeqInfo s = p.step.seqs[seq];
  const int32_t P = p.kv.page_size;
  const int32_t n_blocks = (s.start_pos + s.q_len + P - 1) / P;
  const int32_t others = n_blocks - 1;
  const int32_t k = min(min(s.token_budget, p.budget_cap) / P - 1, others);
  const uint32_t* gkeys =
      p.scratch + (static_cast<int64_t>(blockIdx.x) * gridDim.y + u) * p.max_blocks;
  const int tid = threadIdx.x;
  const bool take_all = k >= others;
  // Six passes read the keys: one global read into shared memory where they fit.
  extern __shared__ uint32_t smem_keys[];
  const bool staged = others <= kTopSmemKeys;
  if (staged) {
    for (int32_t b = tid; b < others; b += blockDim.x) smem_keys[b] = gkeys[b];
  }
  const uint32_t* keys = staged ? smem_keys : gkeys;

  // Radix select: after 4 passes prefix is the k-th largest key T and s_k the number of keys
  // equal to T still needed.
  if (tid == 0) {
    s_prefix = 0;
    s_k = k;
  }
  __syncthreads();
  if (!take_all && k > 0) {
    uint32_t mask = 0;
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
      __syncthreads();
      const uint32_t prefix = s_prefix;
      for (int32_t base = 0; base < others; base += blockDim.x) {
        const int32_t b = base + tid;
        if (b < others && (keys[b] & mask) == prefix)
          atomicAdd(&hist[(keys[b] >> shift) & 255u], 1);
      }
      __syncthreads();
      // Warp 0 finds the digit holding the need-th largest key: each lane sums 8 bins (from the
      // top), a shuffle scan gives the count above each lane, and the one lane whose range holds
      // the need-th key walks its bins.
      if (tid < 32) {
        const int lane = tid;
        int32_t mine = 0;
        for (int i = 0; i < 8; ++i) mine += hist[255 - 8 * lane - i];
        int32_t above = mine;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const int32_t y = __shfl_up_sync(0xffffffffu, above, o);
          if (lane >= o) above += y;
        }
        above -= mine;  // keys in the bins of the lanes before this one
        const int32_t need = s_k;
        __syncwarp();  // every lane has read s_k before the one below overwrites it
        if (above < need && need <= above + mine) {
          int32_t left = need - above;
          int digit = 255 - 8 * lane;
          for (int i = 0; i < 7 && hist[digit] < left; ++i, --digit) left -= hist[digit];
          s_k = left;
          s_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
        }
      }
      mask |= 255u << shift;
      __syncthreads();
    }
  }
  const uint32_t threshold = s_prefix;
  const int32_t eq_needed = s_k;

  // Each thread owns a contiguous run of pages, so prefix sums give page-ordered positions.
  const int32_t chunk = (others + blockDim.x - 1) / blockDim.x;
  const int32_t lo_b = min(others, tid * chunk), hi_b = min(others, lo_b + chunk);
  int32_t eq = 0;
  if (!take_all && k > 0) {
    for (int32_t b = lo_b; b < hi_b; ++b) eq += keys[b] == threshold;
  }
  int32_t total_eq;
  const int32_t eq_before = top_scan(eq, &total_eq);
  auto taken = [&](int32_t b, int32_t& e) {
    if (take_all) return true;
    if (k <= 0) return false;
    if (keys[b] > threshold) return true;
    if (keys[b] != threshold) return false;
    return e++ < eq_needed;
  };
  int32_t mine = 0;
  for (int32_t b = lo_b, e = eq_before; b < hi_b; ++b) mine += taken(b, e);
  int32_t n_sel;
  int32_t out = top_scan(mine, &n_sel);
  const int32_t sel_heads = p.per_query_head ? p.n_heads : p.n_kv_heads;
  const int64_t row = (static_cast<int64_t>(s.sel_slot) * p.n_layers + p.layer) * sel_heads + u;
  int32_t* dst = p.sel_blocks + row * p.max_sel;
  for (int32_t b = lo_b, e = eq_before; b < hi_b; ++b) {
    if (taken(b, e)) dst[out++] = b;
  }
  if (tid == 0) {
    dst[n_sel] = n_blocks - 1;  // the current page, always read
    p.sel_count[row] = n_sel + 1;
  }
}

}  // namespace lserve::cuda
