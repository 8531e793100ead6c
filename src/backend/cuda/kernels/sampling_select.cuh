// The sampling kernel's (sampling.cuh) radix select: 8-bit digits over order-preserving keys,
// counted (top-k) or weighted by the fixed-point weights (top-p), with the candidates gathered
// into shared memory as soon as they fit.
#pragma once

#include "backend/cuda/kernels/sampling_source.cuh"

namespace lserve::cuda::sampling_kernel {

// --- radix select ---------------------------------------------------------------------------

// Keys kept by a cut: those whose bits from `shift` up beat the cut key's, or equal them at an id
// <= id_max. The default cut keeps everything.
struct Cut {
  uint32_t key = 0;
  int shift = 0;
  int id_max = INT_MAX;
  __device__ __forceinline__ bool has(uint32_t k, int id) const {
    const uint32_t a = k >> shift, b = key >> shift;
    return a > b || (a == b && id <= id_max);
  }
};

__device__ __forceinline__ void add_weight(Smem& s, uint32_t bin, u64 w) {
  const uint32_t lo = static_cast<uint32_t>(w), hi = static_cast<uint32_t>(w >> 32);
  const uint32_t old = atomicAdd(&s.weight_lo[bin], lo);
  const uint32_t carry = old + lo < old ? 1u : 0u;
  if (hi + carry) atomicAdd(&s.weight_hi[bin], hi + carry);
}
__device__ __forceinline__ u64 bin_weight(const Smem& s, int b) {
  return (static_cast<u64>(s.weight_hi[b]) << 32) | s.weight_lo[b];
}

// Histogram increments: plain shared atomics. Summing the lanes of a bin in the warp first, for
// the few crowded bins of a first digit, measured slower on an H200 (top-k 40 over 128K tokens:
// 77 us a row with plain atomics, 95 to 140 us with one to four rounds of summing).
__device__ __forceinline__ void hist_count(Smem& s, uint32_t bin, bool on) {
  if (on) atomicAdd(&s.count[bin], 1u);
}
__device__ __forceinline__ void hist_weight(Smem& s, uint32_t bin, u64 w) {
  if (w) add_weight(s, bin, w);
}

// A token's weight in a select (w), and its weight in the top-k set whether min-p keeps it or not
// (z, for top-p's Z): from one evaluation of the exponential.
struct WZ {
  u64 w = 0, z = 0;
};

// One digit (bits [shift, shift + 8) of the keys) over the keys whose higher bits equal prefix's,
// weighted by weigh(id, key).w: the weighted or the count histogram (the count one also with
// kCounts). With kTotals, returns weigh's w and z summed over the block.
struct Totals {
  u64 weight = 0, side = 0;
};
template <bool kWeighted, bool kCounts, bool kTotals, typename Src, typename Weigh>
__device__ __forceinline__ Totals radix_pass(const Src& src, int shift, uint32_t prefix,
                                             Weigh weigh, Smem& s) {
  if (threadIdx.x < 256) {
    s.count[threadIdx.x] = 0;
    s.weight_lo[threadIdx.x] = 0;
    s.weight_hi[threadIdx.x] = 0;
  }
  __syncthreads();
  u64 wsum = 0, ssum = 0;
  walk_segment<kWeighted ? 1 : Src::kVec>(src, [&](int p, bool valid, typename Src::Item it) {
    const uint32_t key = valid ? src.key(p, it) : 0u;
    const int id = src.id(p, it);
    const bool cand = valid && (shift == 24 || (key >> (shift + 8)) == (prefix >> (shift + 8)));
    const uint32_t bin = (key >> shift) & 255u;
    const WZ wz = cand ? weigh(id, key) : WZ{};
    const u64 w = wz.w;
    if (kWeighted) {
      hist_weight(s, bin, w);
      if (kCounts) hist_count(s, bin, cand);
    } else {
      hist_count(s, bin, w > 0);
    }
    if (kTotals && valid) {
      wsum += w;
      ssum += wz.z;
    }
  });
  __syncthreads();
  Totals t;
  if (kTotals) {
    t.weight = block_all(wsum, Add{}, s.red.u);
    t.side = block_all(ssum, Add{}, s.red.u);
  }
  return t;
}

// Sets s.bin to the first bin from the top where the running weight reaches need (1 <= need <=
// the histogram's total), s.bin_before to the weight of the bins above it and s.count_before to
// their count.
template <bool kWeighted>
__device__ __forceinline__ void choose_bin(u64 need, Smem& s) {
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    auto value = [&](int b) -> u64 { return kWeighted ? bin_weight(s, b) : s.count[b]; };
    u64 sum = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) sum += value(255 - 8 * lane - j);
    const u64 incl = warp_inclusive_scan(sum);
    u64 c = incl - sum;
    int bin = -1;
    if (c < need && need <= incl) {
      for (int j = 0; j < 8; ++j) {
        const int b = 255 - 8 * lane - j;
        if (c + value(b) >= need) {
          bin = b;
          s.bin_before = c;
          break;
        }
        c += value(b);
      }
    }
    bin = warp_all(bin, Max{});
    uint32_t above = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int b = 255 - 8 * lane - j;
      if (b > bin) above += s.count[b];
    }
    above = warp_all(above, Add{});
    if (lane == 0) {
      s.bin = bin;
      s.count_before = above;
    }
  }
  __syncthreads();
}

// Where a radix select stands: the key bits chosen (above `shift`) and what lies above them.
struct SelectState {
  uint32_t prefix = 0;
  int shift = 24;
  u64 above = 0;         // weight of the keys above the prefix
  uint32_t above_n = 0;  // their count
};
struct Selected {
  Cut cut;
  u64 above = 0;          // weight of the keys above the cut key
  u64 at = 0;             // weight of the keys equal to it (to its bits from cut.shift up)
  bool exact = false;     // everything at the cut key is inside: no ids needed
  bool gathered = false;  // stopped early: the candidates are in s.list; go on from `next`
  SelectState next;
};

// Writes the members of `cut` (at most kListCap) to s.list, sorted by id (bitonic, one entry a
// thread).
template <typename Src>
__device__ __forceinline__ void gather(const Src& src, const Cut& cut, Smem& s) {
  if (threadIdx.x == 0) s.list_size = 0;
  __syncthreads();
  walk_segment<Src::kVec>(src, [&](int p, bool valid, typename Src::Item it) {
    const uint32_t key = valid ? src.key(p, it) : 0u;
    const int id = src.id(p, it);
    const bool in = valid && cut.has(key, id);
    const unsigned m = __ballot_sync(kFull, in);
    if (!m) return;
    const int leader = __ffs(m) - 1;
    int base = 0;
    if (lane_id() == leader) base = atomicAdd(&s.list_size, __popc(m));
    base = __shfl_sync(kFull, base, leader);
    if (in) s.list[base + __popc(m & ((1u << lane_id()) - 1))] = (static_cast<u64>(id) << 32) | key;
  });
  __syncthreads();
  const int count = s.list_size;
  int size = 1;
  while (size < count) size <<= 1;
  const int t = threadIdx.x;
  u64 v = t < count ? s.list[t] : ~0ull;
  for (int k = 2; k <= size; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      u64 other;
      if (j >= 32) {
        __syncthreads();
        s.list[t] = v;
        __syncthreads();
        other = s.list[t ^ j];
      } else {
        other = __shfl_xor_sync(kFull, v, j);
      }
      const bool ascending = (t & k) == 0, lower = (t & j) == 0;
      v = (lower == ascending) ? min(v, other) : max(v, other);
    }
  }
  __syncthreads();
  if (t < count) s.list[t] = v;
  __syncthreads();
}

// The cut of the heaviest keys whose weight first reaches `target` (1 <= target <= the total of
// weigh(id, key).w), from state `st` (the histogram of its digit already made when hist_ready).
// On the row, stops once the keys at or above the chosen bins fit in the list, gathered there.
template <bool kWeighted, typename Src, typename Weigh>
__device__ __forceinline__ Selected radix_select(const Src& src, Weigh weigh, u64 target,
                                                 SelectState st, bool hist_ready, Smem& s) {
  for (;; st.shift -= 8) {
    if (!hist_ready) {
      radix_pass<kWeighted, Src::kIsRow, false>(src, st.shift, st.prefix, weigh, s);
    }
    hist_ready = false;
    choose_bin<kWeighted>(target - st.above, s);
    const int bin = s.bin;
    const u64 at = kWeighted ? bin_weight(s, bin) : s.count[bin];
    const uint32_t at_n = s.count[bin];
    st.above += s.bin_before;
    st.above_n += s.count_before;
    st.prefix |= static_cast<uint32_t>(bin) << st.shift;
    __syncthreads();  // the histograms are cleared by the next pass
    Selected r;
    r.cut.key = st.prefix;
    r.cut.shift = st.shift;
    r.above = st.above;
    r.at = at;
    if (st.above + at == target || st.shift == 0) {
      r.exact = st.above + at == target;
      return r;
    }
    if constexpr (Src::kIsRow) {
      if (st.above_n + at_n <= kListCap) {
        gather(src, r.cut, s);
        r.gathered = true;
        r.next = st;
        r.next.shift -= 8;
        return r;
      }
    }
  }
}

// The finished cut: where it falls inside a run of equal keys, the ids up to the one that reaches
// the target (every kept token at the key has weight w_at).
template <typename Src, typename Weigh>
__device__ __forceinline__ Cut cut_ties(const Src& src, const Selected& sel, Weigh weigh,
                                        u64 target, u64 w_at, Smem& s) {
  Cut cut = sel.cut;
  if (sel.exact) return cut;
  const u64 need = (target - sel.above + w_at - 1) / w_at;
  if (need < sel.at / w_at) {
    const uint32_t k = cut.key;
    cut.id_max = block_find(
        src, [=](int id, uint32_t key) -> u64 { return key == k && weigh(id, key).w > 0 ? 1 : 0; },
        [=](u64) { return need - 1; }, s);
  }
  return cut;
}

}  // namespace lserve::cuda::sampling_kernel
