// How the sampling kernel (sampling.cuh) reads tokens: the logits row with its edits (logit
// bias, penalties) applied as each token is read, through an index of the edited ids built in
// shared memory, or the list of candidates gathered into shared memory; walks over a warp's
// segment of either; and the block find of where a running sum crosses a target.
#pragma once

#include "backend/cuda/kernels/sampling_block.cuh"

namespace lserve::cuda::sampling_kernel {

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

}  // namespace lserve::cuda::sampling_kernel
