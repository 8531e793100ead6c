// Pieces shared by the attention kernels (attention.cuh: the mma.sync / two-warpgroup tiles;
// attention_ws.cuh: the warp-specialised Hopper prefill): where a work item's keys live, and the
// named stages of a tile's softmax (mask, online update) in the m16n8 accumulator layout that
// mma.sync and wgmma share (a thread holds rows lane / 4 and lane / 4 + 8 of its warp's 16, and
// columns 8 nt + 2 (lane % 4) + {0, 1} of each 8-key n-tile nt).
#pragma once

#include <cfloat>

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Where key index k of a work item lives: its position, its page, or position -1 if none.
struct KeyMap {
  int32_t kind, P, p_shift, page_base, stream_base, n_stream, sink_blocks, window_first, n_list,
      seq_end;
  const int32_t* page_indices;
  const int32_t* stream_indices;
  const int32_t* list;  // selected pages (kind 2, shared memory) or kept blocks (kind 3, global)

  // Keys of the item's range r (its end clipped to the list for kinds 2 and 3).
  __device__ __forceinline__ int32_t range_end(const AttnWork& w, int r) const {
    if (kind == kSelectedPages) return min(w.k_end[r], n_list * P);
    if (kind == kKeptBlocks) return min(w.k_end[r], n_list * kKeptBlockKeys);
    return w.k_end[r];
  }

  // x / P and x % P. The lookups run per key and tile, and a division by a runtime divisor is
  // some twenty instructions: power-of-two page sizes (p_shift >= 0, the usual ones) shift.
  __device__ __forceinline__ int32_t page_of(int32_t x) const {
    return p_shift >= 0 ? x >> p_shift : x / P;
  }
  __device__ __forceinline__ int32_t slot_of(int32_t x) const {
    return p_shift >= 0 ? x & (P - 1) : x % P;
  }

  // *entry: the page-table element holding key k's page (its load is the caller's, so it can
  // be issued early and consumed later).
  __device__ __forceinline__ int32_t locate(int32_t k, const int32_t** entry) const {
    if (kind == kKeptBlocks) {
      const int32_t bi = k / kKeptBlockKeys;
      if (bi >= n_list) return -1;
      const int32_t pos = list[bi] * kKeptBlockKeys + k % kKeptBlockKeys;
      *entry = page_indices + page_base + page_of(pos);
      return pos < seq_end ? pos : -1;
    }
    const int32_t li = page_of(k), slot = slot_of(k);
    int32_t block;
    if (kind == kAllPages) {
      block = li;
      *entry = page_indices + page_base + li;
    } else if (kind == kStreamPages) {
      if (li >= n_stream) return -1;
      block = li < sink_blocks ? li : window_first + (li - sink_blocks);
      *entry = stream_indices + stream_base + li;
    } else {
      if (li >= n_list) return -1;
      block = list[li];
      *entry = page_indices + page_base + block;
    }
    const int32_t pos = block * P + slot;
    return pos < seq_end ? pos : -1;
  }
};

// Builds the kind-2 page list in shared memory (size max_sel + 2): the stored selection without
// the current page, then the current page (it may be newer than the selection). Returns its
// length; every thread of the block must call it.
__device__ __forceinline__ int32_t load_selected_list(const AttnParams& p, const AttnWork& w,
                                                      const SeqInfo& s, int32_t* list) {
  const int32_t sel_head = p.per_query_head ? w.head0 : w.kv_head;
  const int64_t row =
      (static_cast<int64_t>(s.sel_slot) * p.n_layers + p.layer) * p.sel_heads + sel_head;
  const int32_t current = (s.start_pos + s.q_len - 1) / p.kv.page_size;
  // The whole row is read without waiting for the count (entries past it are never used), so
  // the two loads overlap instead of adding a round trip.
  const int32_t cnt = p.sel_count[row];
  for (int32_t i = threadIdx.x; i < p.max_sel; i += blockDim.x) {
    list[i] = p.sel_blocks[row * p.max_sel + i];
  }
  __syncthreads();
  // The list is ascending and no page is newer than the current one, so only its last entry can
  // be the current page.
  if (threadIdx.x == 0) {
    const int32_t n = cnt > 0 && list[cnt - 1] == current ? cnt - 1 : cnt;
    list[n] = current;
    list[p.max_sel + 1] = n + 1;
  }
  __syncthreads();
  return list[p.max_sel + 1];
}

// This CTA's work item: the host-planned list's entry, or (work == null, a device-planned decode
// step) the one derived from the step tables for CTA (unit x, split y). False: nothing to do
// (the whole CTA returns together: the answer depends only on blockIdx).
__device__ __forceinline__ bool cta_work(const AttnParams& p, AttnWork* w) {
  if (p.work) {
    *w = p.work[blockIdx.x];
    return true;
  }
  int32_t pieces;
  return decode_work(p.grid, p.step.seqs, p.kv.head_class, blockIdx.x, blockIdx.y, w, &pieces);
}

// The work item's key map (for kind 2 it first builds the page list in shared memory: every
// thread of the block must call it; kind 3 reads its kept blocks where the keep kernel wrote
// them).
__device__ __forceinline__ KeyMap work_key_map(const AttnParams& p, const AttnWork& w,
                                               const SeqInfo& s, int32_t* list) {
  int32_t n_list = 0;
  const int32_t* blocks = list;
  if (w.kind == kSelectedPages) {
    n_list = load_selected_list(p, w, s, list);
  } else if (w.kind == kKeptBlocks) {
    n_list = p.kept_count[w.list];
    blocks = p.kept + static_cast<int64_t>(w.list) * p.kept_stride;
  }
  const int32_t P = p.kv.page_size;
  return KeyMap{w.kind,
                P,
                (P & (P - 1)) == 0 ? __ffs(P) - 1 : -1,
                s.page_base,
                s.stream_base,
                s.n_stream,
                s.stream_sink_blocks,
                s.stream_window_first,
                n_list,
                s.start_pos + s.q_len,
                p.step.page_indices,
                p.step.stream_indices,
                blocks};
}

// Issues (cp.async, not committed) the copies of the item's BM-row query tile into qs
// ([D/64][BM][64] swizzled), `threads` threads from `tid`; rows beyond the item's are zeros.
template <int D, int BM>
__device__ __forceinline__ void load_query_tile(const AttnParams& p, const AttnWork& w,
                                                const SeqInfo& s, bf16* qs, int tid, int threads) {
  constexpr int CHUNKS = D / 8;
  const int32_t rows = w.q_count * w.rg;
  for (int idx = tid; idx < BM * CHUNKS; idx += threads) {
    const int r = idx / CHUNKS, c = idx % CHUNKS;
    const bool valid = r < rows;
    const int64_t token = s.q_offset + w.q_first + (valid ? r / w.rg : 0);
    const int32_t head = w.head0 + (valid ? r % w.rg : 0);
    cp_async_16(qs + tile_offset<BM>(r, c * 8), p.q + (token * p.n_heads + head) * D + c * 8,
                valid);
  }
}

// Key j of a tile, located: its position (-1: none) and its page. The page is the value of a
// page-table read issued by KeyTiles::locate and first used by row(), so the read can stay in
// flight in between.
struct KeyLoc {
  int32_t pos, page;
  // The key's row in its pool (0 for none: a harmless address, the copy is zero-filled).
  __device__ __forceinline__ int32_t row(const KeyMap& km, int32_t n_pool,
                                         int32_t head_slot) const {
    return pos >= 0 ? (page * n_pool + head_slot) * km.P + km.slot_of(pos) : 0;
  }
};

// Tiles [0, a) and [b, c) of an item (see KeyTiles::whole_tiles).
struct WholeTiles {
  int32_t a, b, c;
  __device__ __forceinline__ bool operator()(int32_t t) const { return t < a || (t >= b && t < c); }
};

// The key tiles of a work item, KT keys each: range 0's tiles, then range 1's (kind-2 ranges are
// clipped to the selected-page list on the device).
template <int KT>
struct KeyTiles {
  KeyMap km;
  int32_t kb[2], ke[2];
  int32_t tiles0, n_tiles;

  KeyTiles() = default;  // trivial, so a kernel may hold one in shared memory
  __device__ __forceinline__ KeyTiles(const AttnWork& w, const KeyMap& map) : km(map) {
    for (int r = 0; r < 2; ++r) {
      kb[r] = w.k_begin[r];
      ke[r] = map.range_end(w, r);
    }
    tiles0 = ke[0] > kb[0] ? (ke[0] - kb[0] + KT - 1) / KT : 0;
    const int32_t tiles1 = ke[1] > kb[1] ? (ke[1] - kb[1] + KT - 1) / KT : 0;
    n_tiles = tiles0 + tiles1;
  }

  // Key j of tile t (selects, not an indexed array: that would live in local memory).
  __device__ __forceinline__ KeyLoc locate(int32_t t, int j) const {
    const int32_t* entry = nullptr;
    KeyLoc loc;
    loc.pos = key(t, j, &entry);
    loc.page = loc.pos >= 0 ? *entry : 0;
    return loc;
  }

  // Key j of tile t's position alone (-1: none): arithmetic and the shared-memory page list, no
  // page-table read. A dense item's key index is its position (no division by the page size).
  __device__ __forceinline__ int32_t position(int32_t t, int j) const {
    int32_t end;
    const int32_t k = index(t, j, &end);
    if (km.kind == kAllPages) return k < end && k < km.seq_end ? k : -1;
    const int32_t* entry = nullptr;
    return k < end ? km.locate(k, &entry) : -1;
  }

  // The tiles that need no mask for rows at positions qmin..qmax, as spans of tile indices:
  // every key exists, none is after qmin, and on a streaming head all are in the sink or all
  // inside qmax's window (the bulk of causal and streaming attention). Positions grow with the
  // tile inside each range (a streaming head's window keys are their indices shifted by whole
  // pages; kept blocks ascend and all but the last lie before the queries' block), so each
  // range's such tiles are one span, found once per item by arithmetic instead of per tile.
  __device__ __forceinline__ WholeTiles whole_tiles(int32_t qmin, int32_t qmax, int32_t sink,
                                                    int32_t window) const {
    WholeTiles wt{0, 0, 0};
    if (km.kind == kAllPages) {
      wt.a = span_end(kb[0], 0, tiles0, min(min(ke[0], km.seq_end) - 1, qmin));
    } else if (km.kind == kStreamPages) {
      wt.a = span_end(kb[0], 0, tiles0, min(min(min(ke[0], km.seq_end) - 1, qmin), sink - 1));
      // Window keys: position = key index + shift. Their tiles start at or after the window's
      // first position for qmax and end by the last position every row sees.
      const int32_t shift = (km.window_first - km.sink_blocks) * km.P;
      const int32_t tiles1 = n_tiles - tiles0;
      const int64_t from = static_cast<int64_t>(qmax) - window + 1 - shift - kb[1];
      const int64_t first_tile = from <= 0 ? 0 : (from + KT - 1) / KT;
      const int32_t lo = static_cast<int32_t>(first_tile < tiles1 ? first_tile : tiles1);
      const int32_t hi =
          span_end(kb[1] + shift, 0, tiles1, min(min(ke[1] + shift, km.seq_end) - 1, qmin));
      wt.b = tiles0 + lo;
      wt.c = tiles0 + max(lo, hi);
    } else if (km.kind == kKeptBlocks && KT == kKeptBlockKeys && n_tiles > 0) {
      const int32_t last = km.list[n_tiles - 1] * kKeptBlockKeys + KT - 1;
      wt.a = n_tiles - (last < km.seq_end && last <= qmin ? 0 : 1);
    }
    return wt;
  }

 private:
  // The end of the span [t0, .) of a range's tiles (keys begin + t KT ..) whose last key is at
  // most `limit`, capped at t1.
  __device__ __forceinline__ static int32_t span_end(int32_t begin, int32_t t0, int32_t t1,
                                                     int32_t limit) {
    const int32_t room = limit - (begin + KT - 1);
    return room < 0 ? t0 : min(t1, t0 + room / KT + 1);
  }
  // Key j of tile t's index in the item's key order, and the end of its range.
  __device__ __forceinline__ int32_t index(int32_t t, int j, int32_t* end) const {
    const bool second = t >= tiles0;
    *end = second ? ke[1] : ke[0];
    return (second ? kb[1] : kb[0]) + (t - (second ? tiles0 : 0)) * KT + j;
  }
  __device__ __forceinline__ int32_t key(int32_t t, int j, const int32_t** entry) const {
    int32_t end;
    const int32_t k = index(t, j, &end);
    return k < end ? km.locate(k, entry) : -1;
  }
};

// Whether a warp may skip the per-element mask for its KW keys at tpos: every key exists and
// every row of the warp (positions qmin..qmax, the warp's extremes without padding rows) sees it:
// no key after qmin and, on a streaming head, each in the sink or inside qmax's window. The bulk
// of causal and streaming attention (a streaming head's tiles are masked only at the window's
// edge and the diagonal), and every dense decode tile but the last. Each lane tests its own keys.
template <int KW>
__device__ __forceinline__ bool tile_whole(const int32_t* tpos, int32_t qmin, int32_t qmax,
                                           bool streaming, int32_t sink, int32_t window, int lane) {
  bool whole = true;
#pragma unroll
  for (int i = 0; i < (KW + 31) / 32; ++i) {
    const int j = 32 * i + lane;
    if (j < KW) {
      const int32_t kp = tpos[j];
      whole = whole && kp >= 0 && kp <= qmin &&
              (!streaming || kp < sink ||
               static_cast<int64_t>(kp) > static_cast<int64_t>(qmax) - window);
    }
  }
  return __all_sync(0xffffffffu, whole);
}

// Stage 1, mask: scores of keys a row may not see become -inf. tpos: the positions of the warp's
// keys (-1: none); qpos: this thread's two rows' positions (-1: a padding row). Branch-free.
template <int NT>
__device__ __forceinline__ void mask_scores(float (&sc)[NT][4], const int32_t* tpos,
                                            const int32_t (&qpos)[2], bool streaming, int32_t sink,
                                            int32_t window, int lane) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int32_t kp = tpos[nt * 8 + 2 * (lane % 4) + e % 2];
      const int32_t qp = qpos[e / 2];
      bool vis = (kp >= 0) & (kp <= qp);
      if (streaming) {
        vis = vis & ((kp < sink) | (static_cast<int64_t>(kp) > static_cast<int64_t>(qp) - window));
      }
      sc[nt][e] = vis ? sc[nt][e] : -INFINITY;
    }
  }
}

// Stage 2, online softmax update: the rows' maxima m (raw score units; the scale, log2(e) /
// sqrt(d), is folded into the exponent's FMA) and sums l advance over this tile, the scores
// become probabilities 2^(s * scale - m * scale), and alpha is the factor each row's earlier
// output must be multiplied by. A row with nothing visible yet keeps its state (no -inf - -inf).
template <int NT>
__device__ __forceinline__ void online_softmax(float (&sc)[NT][4], float (&m)[2], float (&l)[2],
                                               float scale, float (&alpha)[2]) {
  float mx[2] = {m[0], m[1]};
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], sc[nt][e]);
  }
  float msc[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    const bool none = mx[h] == -INFINITY;
    alpha[h] = none ? 1.0f : fast_exp2((m[h] - mx[h]) * scale);
    msc[h] = none ? 0.0f : mx[h] * scale;
    m[h] = mx[h];
    l[h] *= alpha[h];
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float pv = fast_exp2(fmaf(sc[nt][e], scale, -msc[e / 2]));  // -inf -> 0
      sc[nt][e] = pv;
      l[e / 2] += pv;
    }
  }
}

// Stage 3, rescale: the output accumulators of rows whose maximum grew (alpha != 1). Skipped when
// no row of the warp needs it, the usual case once a few tiles are in.
template <int DT>
__device__ __forceinline__ void rescale_output(float (&o)[DT][4], float a0, float a1) {
  if (__any_sync(0xffffffffu, a0 != 1.0f || a1 != 1.0f)) {
#pragma unroll
    for (int i = 0; i < DT; ++i) {
      o[i][0] *= a0;
      o[i][1] *= a0;
      o[i][2] *= a1;
      o[i][3] *= a1;
    }
  }
}

}  // namespace lserve::cuda
