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

// --- the row and the gathered list, behind one interface ----------------------------------------

// Where a row's edits are and how to find a token's.
struct EditIndex {
  const Smem* s;
  const LogitEdit* edits;
  int max_edit;  // s->max_edit, in a register: every token of every pass tests it

  __device__ __forceinline__ int of(int id) const {
    if (id > max_edit) return -1;
    if (id < kBitmapIds) {
      const uint32_t word = s->edited[id >> 5], bit = 1u << (id & 31);
      if (!(word & bit)) return -1;
      const int group = id >> 8;
      int r = static_cast<int>(s->rank[group]);
      for (int j = group * kRankWords; j < (id >> 5); ++j) r += __popc(s->edited[j]);
      return r + __popc(word & (bit - 1));
    }
    // Past the bitmap (vocabularies over 2^18): the sorted list, whose bounds stay in shared
    // memory, out of the registers every pass needs.
    const int end = s->edit_end;
    int lo = s->edit_begin, hi = end;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (edits[mid].token < id) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo < end && edits[lo].token == id ? lo : -1;
  }
};

// Positions are token ids; keys are of the edited logits.
struct RowSource {
  using Item = float;
  static constexpr bool kIsRow = true;
  static constexpr int kVec = 4;  // tokens a lane loads at once (float4)
  const float* row;
  int n;
  EditIndex ei;

  __device__ __forceinline__ int size() const { return n; }
  // Tokens before the first 16-byte boundary, which the float4 loads start at.
  __device__ __forceinline__ int head() const {
    return static_cast<int>((16 - (reinterpret_cast<uintptr_t>(row) & 15)) & 15) >> 2;
  }
  __device__ __forceinline__ float item(int p) const { return row[p]; }
  __device__ __forceinline__ void load(int p, float (&it)[kVec]) const {
    const float4 v = *reinterpret_cast<const float4*>(row + p);
    it[0] = v.x;
    it[1] = v.y;
    it[2] = v.z;
    it[3] = v.w;
  }
  __device__ __forceinline__ int id(int p, float) const { return p; }
  __device__ __forceinline__ uint32_t key(int p, float raw) const {
    const int e = ei.of(p);
    return sampling::logit_key(e < 0 ? raw : sampling::edit_logit(raw, ei.edits[e]));
  }
};

// Gathered tokens in shared memory, by id.
struct ListSource {
  using Item = u64;
  static constexpr bool kIsRow = false;
  static constexpr int kVec = 1;
  const u64* list;
  int n;

  __device__ __forceinline__ int size() const { return n; }
  __device__ __forceinline__ int head() const { return 0; }
  __device__ __forceinline__ u64 item(int p) const { return list[p]; }
  __device__ __forceinline__ void load(int p, u64 (&it)[kVec]) const { it[0] = list[p]; }
  __device__ __forceinline__ int id(int, u64 it) const { return static_cast<int>(it >> 32); }
  __device__ __forceinline__ uint32_t key(int, u64 it) const { return static_cast<uint32_t>(it); }
};

// Positions are split into 32 contiguous warp segments; a running sum in position order then
// needs one scan of 32 warp totals. In the row, segments start on 16-byte boundaries (but the
// first) and lanes take 4 consecutive tokens at a time, so that loads are float4 and coalesce.
template <typename Src>
__device__ __forceinline__ Segment compute_segment(const Src& src, int w) {
  constexpr int kStep = 32 * Src::kVec;
  const int n = src.size(), h = min(src.head(), n);
  const int seg = (n + 32 * kStep - 1) / (32 * kStep) * kStep;  // 32 * seg >= n
  Segment sg;
  sg.begin = w == 0 ? 0 : min(n, h + w * seg);
  sg.end = min(n, h + (w + 1) * seg);
  sg.qa = min(sg.end, w == 0 ? h : sg.begin);
  sg.qe = sg.qa + (sg.end - sg.qa) / Src::kVec * Src::kVec;
  return sg;
}
template <typename Src>
__device__ __forceinline__ Segment segment_of(const Src& src, int w) {
  if constexpr (Src::kIsRow) {
    return src.ei.s->row_segment[w];
  } else {
    return compute_segment(src, w);
  }
}

// f(position, valid, item) for every position of this warp's segment, warp-uniformly (f may use
// warp collectives), in no particular order, loading kVec tokens a lane at once (1 or Src::kVec).
template <int kVec, typename Src, typename F>
__device__ __forceinline__ void walk_segment(const Src& src, F&& f) {
  using Item = typename Src::Item;
  const Segment sg = segment_of(src, warp_id());
  const int lane = lane_id();
  const int nh = sg.qa - sg.begin, nt = sg.end - sg.qe;
  if (nh + nt > 0) {
    const int p = lane < nh ? sg.begin + lane : (lane < nh + nt ? sg.qe + lane - nh : -1);
    f(p, p >= 0, p >= 0 ? src.item(p) : Item{});
  }
  for (int base = sg.qa; base < sg.qe; base += 32 * kVec) {
    const int p = base + lane * kVec;
    Item it[kVec];
    if (p < sg.qe) {
      if constexpr (kVec == Src::kVec) {
        src.load(p, it);
      } else {
        static_assert(kVec == 1);
        it[0] = src.item(p);
      }
    } else {
#pragma unroll
      for (int j = 0; j < kVec; ++j) it[j] = Item{};
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) f(p + j, p < sg.qe, it[j]);
  }
}

// --- block find: where a running sum in position order crosses a target -------------------------

// The id at the first position whose inclusive running weight (in position order) exceeds
// target_of(total weight); -1 when the total is 0. weight(id, key) is evaluated twice for some
// positions, so it must depend on nothing else.
template <typename Src, typename Weight, typename TargetOf>
__device__ __forceinline__ int block_find(const Src& src, Weight weight, TargetOf target_of,
                                          Smem& s) {
  u64 mine = 0;
  walk_segment<1>(src, [&](int p, bool valid, typename Src::Item it) {
    if (valid) mine += weight(src.id(p, it), src.key(p, it));
  });
  mine = warp_all(mine, Add{});
  if (lane_id() == 0) s.red.u[warp_id()] = mine;
  __syncthreads();
  u64 total = 0;
  for (int w = 0; w < kWarps; ++w) total += s.red.u[w];
  if (total == 0) {
    __syncthreads();
    return -1;
  }
  const u64 target = target_of(total);
  int w = 0;
  u64 before = 0;
  while (before + s.red.u[w] <= target) before += s.red.u[w++];
  __syncthreads();

  // Inside that warp's segment (4K tokens for 2^17): a contiguous run a thread, then one scan.
  const Segment sg = segment_of(src, w);
  const int run = (sg.end - sg.begin + kThreads - 1) / kThreads;
  const int rb = min(sg.end, sg.begin + static_cast<int>(threadIdx.x) * run);
  const int re = min(sg.end, rb + run);
  u64 sum = 0;
  // These loops run once a find; unrolled, they took registers the passes need (and spilled).
#pragma unroll 1
  for (int p = rb; p < re; ++p) {
    const auto it = src.item(p);
    sum += weight(src.id(p, it), src.key(p, it));
  }
  const u64 excl = block_exclusive_scan(sum, s);
  const u64 local = target - before;
  if (excl <= local && local < excl + sum) {
    u64 c = excl;
#pragma unroll 1
    for (int p = rb; p < re; ++p) {
      const auto it = src.item(p);
      c += weight(src.id(p, it), src.key(p, it));
      if (c > local) {
        s.found = src.id(p, it);
        break;
      }
    }
  }
  __syncthreads();
  return s.found;
}

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

// Builds the edit index; false (block-uniform) when the row's edits are not strictly increasing.
__device__ __forceinline__ bool build_edit_index(const SampleRow& row, const LogitEdit* edits,
                                                 int n, Smem& s) {
  // Without edits the bitmap is never read (max_edit -1 stops every lookup first).
  const int words = row.edit_end > row.edit_begin ? min(kBitmapWords, (n + 31) / 32) : 0;
  for (int i = threadIdx.x; i < words; i += kThreads) s.edited[i] = 0;
  __syncthreads();
  bool bad = false;
  int negative = 0, last = -1;
  for (int i = row.edit_begin + threadIdx.x; i < row.edit_end; i += kThreads) {
    const int t = edits[i].token;
    if (i + 1 < row.edit_end && edits[i + 1].token <= t) bad = true;
    if (t < 0) {
      ++negative;
    } else if (t < n) {
      last = max(last, t);
      if (t < kBitmapIds) atomicOr(&s.edited[t >> 5], 1u << (t & 31));
    }
  }
  if (__syncthreads_or(bad)) return false;
  negative = block_all(negative, Add{}, s.red.i);
  last = block_all(last, Max{}, s.red.i);
  u64 flagged = 0;
#pragma unroll 1  // (registers, as in block_find)
  for (int j = 0; j < kRankWords; ++j) {
    const int w = static_cast<int>(threadIdx.x) * kRankWords + j;
    if (w < words) flagged += __popc(s.edited[w]);
  }
  const u64 before = block_exclusive_scan(flagged, s);
  s.rank[threadIdx.x] = static_cast<uint32_t>(row.edit_begin + negative + before);
  if (threadIdx.x == 0) {
    s.max_edit = last;
    s.edit_begin = row.edit_begin;
    s.edit_end = row.edit_end;
  }
  __syncthreads();
  return true;
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
