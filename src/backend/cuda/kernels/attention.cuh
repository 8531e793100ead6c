// Paged sparse attention on tensor cores, one kernel for prefill and decode (FlashAttention-2
// style online softmax). A CTA takes one work item: the queries of one sequence for one KV group
// as tile rows (row r = query q_first + r / rg, head head0 + r % rg, so a GQA group's heads share
// every K/V tile it loads) and one or two ranges of key indices over the head's page list (all
// pages; sink + window pages; or the selected pages + the current one). K/V tiles of 64 keys are
// gathered through the page table with cp.async, double-buffered, and masked token-exactly.
//
// Policy (template) parameters: HEAD_DIM; WARPS_M x WARPS_N warps, rows split over WARPS_M (16
// each) and each K/V tile's keys over WARPS_N; WGMMA: the two products of a tile on Hopper's
// warpgroup MMA (wgmma.cuh) instead of per-warp mma.sync, same register layouts, so masking and
// softmax are shared. Prefill uses 8x1 (128 rows; wgmma on sm_90); decode uses 1x4 (16 rows: the
// group's heads) and merges the four warps' partial softmax states at the end.
// Split-KV items write normalised partial outputs plus log2-sum-exp; merge_kernel combines them.
// FP8: the pools hold E4M3 bytes with a scale per key row (kv/kv_dtype.h). Tiles of bytes are
// copied in (half the bytes of bf16), widened to bf16 in shared memory (exact: every E4M3 value is
// a bf16), and the scales are applied where they cost least: a key's scale multiplies its score
// column, a value's scale its probability column (after the row sum, which needs the
// probabilities themselves).
#pragma once

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Where key index k of a work item lives: its position, its page, or position -1 if none.
struct KeyMap {
  int32_t kind, P, page_base, stream_base, n_stream, sink_blocks, window_first, n_list, seq_end;
  const int32_t* page_indices;
  const int32_t* stream_indices;
  const int32_t* list;  // selected blocks (kind 2), in shared memory

  // *entry: the page-table element holding key k's page (its load is the caller's, so it can
  // be issued early and consumed later).
  __device__ __forceinline__ int32_t locate(int32_t k, const int32_t** entry) const {
    const int32_t li = k / P, slot = k % P;
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

// MIN_CTAS: CTAs per multiprocessor the registers must allow (decode tiles: three, as the
// planner assumes).
template <int D, int WARPS_M, int WARPS_N, int MT, bool WGMMA, int MIN_CTAS, bool FP8>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, MIN_CTAS) attention_kernel(AttnParams p) {
  griddep_wait();
  griddep_launch_dependents();
  static_assert(MT == 1 || WARPS_N == 1, "split-key warps hold one m-tile");
  static_assert(!WGMMA || (WARPS_M % 4 == 0 && WARPS_N == 1 && MT == 1),
                "wgmma tiles: whole warpgroups of 64 rows, all keys of a tile per warp");
  constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  constexpr int BM = 16 * WARPS_M * MT;   // each warp holds MT m-tiles of 16 rows
  constexpr int KW = kKeyTile / WARPS_N;  // keys per warp per tile
  constexpr int NT = KW / 8;              // score n-tiles per warp
  constexpr int DT = D / 8;               // output n-tiles
  constexpr int CHUNKS = D / 8;           // 16-byte chunks per row

  // Tiles start on a 1024-byte boundary (the 128-byte swizzle pattern repeats every 8 rows).
  // FP8 (attn_smem_bytes): one bf16 K and V tile (the widened current tile), and two stages of
  // E4M3 K and V tiles and of their scales in flight, instead of two bf16 stages.
  constexpr int kBf16Stages = FP8 ? 1 : 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw + (1024 - smem_addr(smem_raw) % 1024) % 1024);
  bf16* ks = qs + BM * D;                                                       // [stages][64][D]
  bf16* vs = ks + kBf16Stages * kKeyTile * D;                                   // [stages][64][D]
  uint8_t* k8 = reinterpret_cast<uint8_t*>(vs + kBf16Stages * kKeyTile * D);    // FP8: [2][64][D]
  uint8_t* v8 = k8 + (FP8 ? 2 * kKeyTile * D : 0);                              // FP8: [2][64][D]
  float* kscale = reinterpret_cast<float*>(v8 + (FP8 ? 2 * kKeyTile * D : 0));  // FP8: [2][64]
  float* vscale = kscale + (FP8 ? 2 * kKeyTile : 0);                            // FP8: [2][64]
  // Key positions (-1: none) and pool rows of four tiles: the one being computed, the one being
  // loaded, the one being located and the one whose page-table reads are in flight.
  int32_t* kpos = reinterpret_cast<int32_t*>(vscale + (FP8 ? 2 * kKeyTile : 0));  // [4][64]
  int32_t* krow = kpos + 4 * kKeyTile;                                            // [4][64]
  int32_t* list = krow + 4 * kKeyTile;                                            // [max_sel + 2]

  AttnWork w;
  if (!cta_work(p, &w)) return;
  const SeqInfo s = p.step.seqs[w.seq];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % WARPS_M, wn = warp / WARPS_M;
  const int32_t rows = w.q_count * w.rg;
  const int32_t seq_end = s.start_pos + s.q_len;
  const bool streaming = w.kind == kStreamPages;
  const int32_t hs = p.kv.head_slot[w.kv_head];
  const KvPoolView pool = p.kv.pool(streaming);
  const int32_t n_pool = pool.n;
  const int32_t P = p.kv.page_size;

  const int32_t n_list = w.kind == kSelectedPages ? load_selected_list(p, w, s, list) : 0;
  KeyMap km{w.kind,
            P,
            s.page_base,
            s.stream_base,
            s.n_stream,
            s.stream_sink_blocks,
            s.stream_window_first,
            n_list,
            seq_end,
            p.step.page_indices,
            p.step.stream_indices,
            list};

  // Key tiles: range 0 then range 1 (kind 2 ranges are clipped to the list on the device).
  int32_t kb[2], ke[2];
  for (int r = 0; r < 2; ++r) {
    kb[r] = w.k_begin[r];
    ke[r] = w.kind == kSelectedPages ? min(w.k_end[r], n_list * P) : w.k_end[r];
  }
  const int32_t tiles0 = ke[0] > kb[0] ? (ke[0] - kb[0] + kKeyTile - 1) / kKeyTile : 0;
  const int32_t tiles1 = ke[1] > kb[1] ? (ke[1] - kb[1] + kKeyTile - 1) / kKeyTile : 0;
  const int32_t n_tiles = tiles0 + tiles1;

  // Where the keys of tile t live: one thread per key row looks it up (position and pool row),
  // so the page table is read once per key, not once per 16-byte chunk. The lookup is split so
  // the page-table read stays in flight for a whole tile: start_locate issues it, finish_locate
  // (an iteration later) writes the tile's slot.
  static_assert(kThreads >= 2 * kKeyTile, "one thread per key of two tiles");
  int32_t pend_pos = -1, pend_page = 0;
  // Key j of tile t (selects, not an indexed array: that would live in local memory).
  auto start_locate = [&](int32_t t, int j) {
    const bool second = t >= tiles0;
    const int32_t k = (second ? kb[1] : kb[0]) + (t - (second ? tiles0 : 0)) * kKeyTile + j;
    const int32_t* entry = nullptr;
    pend_pos = k < (second ? ke[1] : ke[0]) ? km.locate(k, &entry) : -1;
    pend_page = pend_pos >= 0 ? *entry : 0;
  };
  auto finish_locate = [&](int slot, int j) {
    const int64_t row = pend_pos >= 0 ? (pend_page * n_pool + hs) * P + pend_pos % P : 0;
    kpos[slot * kKeyTile + j] = pend_pos;
    krow[slot * kKeyTile + j] = static_cast<int32_t>(row);
    if constexpr (FP8) {
      // An FP8 tile is half a bf16 one, so the same stages keep half the bytes in flight: the
      // rows of the tile after next (one 128-byte line each at head_dim 128) are fetched into L2
      // now, ahead of their copy into shared memory.
      if (pend_pos >= 0) {
        prefetch_l2(static_cast<const uint8_t*>(pool.k) + row * D);
        prefetch_l2(static_cast<const uint8_t*>(pool.v) + row * D);
      }
    }
  };
  auto issue_tile = [&](int stage, int slot) {
    if constexpr (FP8) {
      constexpr int kChunks8 = D / 16;  // 16-byte chunks of an E4M3 row
      const auto* kpool = static_cast<const uint8_t*>(pool.k);
      const auto* vpool = static_cast<const uint8_t*>(pool.v);
      for (int idx = tid; idx < kKeyTile * kChunks8; idx += kThreads) {
        const int j = idx / kChunks8, c = idx % kChunks8;
        const bool valid = kpos[slot * kKeyTile + j] >= 0;
        const int64_t row = krow[slot * kKeyTile + j];
        const int off = (stage * kKeyTile + j) * D + c * 16;
        cp_async_16(k8 + off, kpool + row * D + c * 16, valid);
        cp_async_16(v8 + off, vpool + row * D + c * 16, valid);
      }
      if (tid < kKeyTile) {
        const bool valid = kpos[slot * kKeyTile + tid] >= 0;
        const int64_t row = krow[slot * kKeyTile + tid];
        cp_async_4(kscale + stage * kKeyTile + tid, pool.k_scale + row, valid);
        cp_async_4(vscale + stage * kKeyTile + tid, pool.v_scale + row, valid);
      }
    } else {
      const auto* kpool = static_cast<const bf16*>(pool.k);
      const auto* vpool = static_cast<const bf16*>(pool.v);
      for (int idx = tid; idx < kKeyTile * CHUNKS; idx += kThreads) {
        const int j = idx / CHUNKS, c = idx % CHUNKS;
        const bool valid = kpos[slot * kKeyTile + j] >= 0;
        const int64_t row = krow[slot * kKeyTile + j];
        const int off = stage * kKeyTile * D + tile_offset<kKeyTile>(j, c * 8);
        cp_async_16(ks + off, kpool + row * D + c * 8, valid);
        cp_async_16(vs + off, vpool + row * D + c * 8, valid);
      }
    }
  };
  // FP8: stage `stage`'s E4M3 tiles, widened into the bf16 tiles in the layout the products read.
  auto widen_tile = [&](int stage) {
    constexpr int kChunks8 = D / 16;
    for (int idx = tid; idx < 2 * kKeyTile * kChunks8; idx += kThreads) {
      const bool value = idx >= kKeyTile * kChunks8;
      const int i = value ? idx - kKeyTile * kChunks8 : idx;
      const int j = i / kChunks8, c = i % kChunks8;
      const uint4 in =
          *reinterpret_cast<const uint4*>((value ? v8 : k8) + (stage * kKeyTile + j) * D + c * 16);
      bf16* dst = value ? vs : ks;
      const uint4 lo = make_uint4(e4m3x2_to_bf16x2(in.x), e4m3x2_to_bf16x2(in.x >> 16),
                                  e4m3x2_to_bf16x2(in.y), e4m3x2_to_bf16x2(in.y >> 16));
      const uint4 hi = make_uint4(e4m3x2_to_bf16x2(in.z), e4m3x2_to_bf16x2(in.z >> 16),
                                  e4m3x2_to_bf16x2(in.w), e4m3x2_to_bf16x2(in.w >> 16));
      *reinterpret_cast<uint4*>(dst + tile_offset<kKeyTile>(j, c * 16)) = lo;
      *reinterpret_cast<uint4*>(dst + tile_offset<kKeyTile>(j, c * 16 + 8)) = hi;
    }
  };

  // FP8: multiplies this warp's score or probability columns by one scale per key of the tile.
  auto scale_columns = [&](float(&x)[MT][NT][4], const float* tile_scales) {
    const float* sc_warp = tile_scales + wn * KW;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const float s0 = sc_warp[nt * 8 + 2 * (lane % 4)], s1 = sc_warp[nt * 8 + 2 * (lane % 4) + 1];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        x[mt][nt][0] *= s0;
        x[mt][nt][1] *= s1;
        x[mt][nt][2] *= s0;
        x[mt][nt][3] *= s1;
      }
    }
  };

  // Queries: rows beyond `rows` are zero and masked out.
  for (int idx = tid; idx < BM * CHUNKS; idx += kThreads) {
    const int r = idx / CHUNKS, c = idx % CHUNKS;
    const bool valid = r < rows;
    const int64_t token = s.q_offset + w.q_first + (valid ? r / w.rg : 0);
    const int32_t head = w.head0 + (valid ? r % w.rg : 0);
    cp_async_16(qs + tile_offset<BM>(r, c * 8), p.q + (token * p.n_heads + head) * D + c * 8,
                valid);
  }
  // Tiles 0 and 1 are located at once (threads [0, 64) and [64, 128)), one round trip to the
  // page table instead of two; from then on threads [0, 64) locate one tile per iteration.
  if (tid < 2 * kKeyTile && tid / kKeyTile < n_tiles) {
    start_locate(tid / kKeyTile, tid % kKeyTile);
    finish_locate(tid / kKeyTile, tid % kKeyTile);
  }
  if (n_tiles > 0) {
    __syncthreads();
    issue_tile(0, 0);
  }
  cp_async_commit();
  if (n_tiles > 2 && tid < kKeyTile) start_locate(2, tid);

  // Each thread holds two rows of each of its warp's m-tiles: lane / 4 and lane / 4 + 8. Every
  // K/V fragment loaded from shared memory feeds all MT m-tiles.
  int32_t qpos[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    for (int h = 0; h < 2; ++h) {
      const int r = 16 * (wm * MT + mt) + lane / 4 + 8 * h;
      qpos[mt][h] = r < rows ? s.start_pos + w.q_first + r / w.rg : -1;
    }
  }
  const int32_t window = s.stream_window;
  float m[MT][2], l[MT][2];
  float o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
    for (int i = 0; i < DT; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
  }

  for (int32_t t = 0; t < n_tiles; ++t) {
    const int stage = t % 2, slot = t % 4;
    // Loads of tile t+1 go out now; tile t+2's lookup (started an iteration ago) is written and
    // tile t+3's starts while they and tile t are in flight. Buffers reused here were last read
    // before the previous iteration's closing barrier.
    if (t + 1 < n_tiles) {
      issue_tile((t + 1) % 2, (t + 1) % 4);
      cp_async_commit();
    }
    if (t + 2 < n_tiles && tid < kKeyTile) finish_locate((t + 2) % 4, tid);
    if (t + 3 < n_tiles && tid < kKeyTile) start_locate(t + 3, tid);
    if (t + 1 < n_tiles) {
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    if constexpr (FP8) {
      __syncthreads();
      widen_tile(stage);
    }
    if constexpr (WGMMA) fence_proxy_async();
    __syncthreads();
    const bf16* kt = ks + (FP8 ? 0 : stage * kKeyTile * D);
    const bf16* vt = vs + (FP8 ? 0 : stage * kKeyTile * D);

    // S = Q K^T for this warp's rows x KW keys.
    float sc[MT][NT][4];
    if constexpr (WGMMA) {
      wgmma_qk<D, BM>(sc[0], qs, kt, warp / 4);
    } else {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < NT; ++i)
          sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        // Q fragments come from shared memory each time: keeping all of them in registers would
        // spill at head_dim 128.
        uint32_t qf[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          ldmatrix_x4(qf[mt],
                      qs + tile_offset<BM>(16 * (wm * MT + mt) + (lane % 8) + 8 * ((lane / 8) % 2),
                                           kk * 16 + 8 * (lane / 16)));
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
          uint32_t b[4];
          const int key = wn * KW + nt * 8 + (lane % 8) + 8 * (lane / 16);
          ldmatrix_x4(b, kt + tile_offset<kKeyTile>(key, kk * 16 + 8 * ((lane / 8) % 2)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816(sc[mt][nt], qf[mt], b[0], b[1]);
            mma_16816(sc[mt][nt + 1], qf[mt], b[2], b[3]);
          }
        }
      }
    }

    // FP8: each score column times its key's scale (a masked key's 0 gives a finite 0, then -inf).
    if constexpr (FP8) scale_columns(sc, kscale + stage * kKeyTile);

    // Mask by position, then the online softmax update. Row maxima m are kept in raw score
    // units and the scale (log2(e) / sqrt(d)) is folded into the exponent's FMA. Tiles that every
    // row of the warp sees whole (the bulk of causal attention) skip the per-element test; the
    // test itself is branch-free.
    const int32_t* tpos = kpos + slot * kKeyTile + wn * KW;
    int32_t qmin = INT32_MAX;
    bool rows_valid = true;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      qmin = min(qmin, min(qpos[mt][0], qpos[mt][1]));
      rows_valid = rows_valid && qpos[mt][0] >= 0 && qpos[mt][1] >= 0;
    }
    const bool whole = !streaming && __all_sync(0xffffffffu, rows_valid) && tpos[0] >= 0 &&
                       tpos[KW - 1] >= 0 && tpos[KW - 1] - tpos[0] == KW - 1 &&
                       __all_sync(0xffffffffu, tpos[KW - 1] <= qmin);
    if (!whole) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int32_t kp = tpos[nt * 8 + 2 * (lane % 4) + e % 2];
            const int32_t qp = qpos[mt][e / 2];
            bool vis = (kp >= 0) & (kp <= qp);
            if (streaming) {
              vis = vis & ((kp < p.sink) |
                           (static_cast<int64_t>(kp) > static_cast<int64_t>(qp) - window));
            }
            sc[mt][nt][e] = vis ? sc[mt][nt][e] : -INFINITY;
          }
        }
      }
    }
    const float scale = p.scale_log2;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float mx[2] = {m[mt][0], m[mt][1]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) mx[e / 2] = fmaxf(mx[e / 2], sc[mt][nt][e]);
      }
      float alpha[2], msc[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
        // Nothing visible yet in this row: keep the state as is (no -inf - -inf).
        const bool none = mx[h] == -INFINITY;
        alpha[h] = none ? 1.0f : fast_exp2((m[mt][h] - mx[h]) * scale);
        msc[h] = none ? 0.0f : mx[h] * scale;
        m[mt][h] = mx[h];
        l[mt][h] *= alpha[h];
      }
#pragma unroll
      for (int i = 0; i < DT; ++i) {
        o[mt][i][0] *= alpha[0];
        o[mt][i][1] *= alpha[0];
        o[mt][i][2] *= alpha[1];
        o[mt][i][3] *= alpha[1];
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pv = fast_exp2(fmaf(sc[mt][nt][e], scale, -msc[e / 2]));  // -inf -> 0
          sc[mt][nt][e] = pv;
          l[mt][e / 2] += pv;
        }
      }
    }
    // FP8: each probability column times its value's scale: P diag(s) V = P (diag(s) V).
    if constexpr (FP8) scale_columns(sc, vscale + stage * kKeyTile);

    // O += P V: the score accumulators become the A fragments (16 keys per MMA step).
    if constexpr (WGMMA) {
      wgmma_pv<D>(o[0], sc[0], vt);
    } else {
#pragma unroll
      for (int c = 0; c < KW / 16; ++c) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_bf16(sc[mt][2 * c][0], sc[mt][2 * c][1]);
          a[mt][1] = pack_bf16(sc[mt][2 * c][2], sc[mt][2 * c][3]);
          a[mt][2] = pack_bf16(sc[mt][2 * c + 1][0], sc[mt][2 * c + 1][1]);
          a[mt][3] = pack_bf16(sc[mt][2 * c + 1][2], sc[mt][2 * c + 1][3]);
        }
#pragma unroll
        for (int nd = 0; nd < DT; nd += 2) {
          uint32_t b[4];
          const int key = wn * KW + c * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          ldmatrix_x4_trans(b, vt + tile_offset<kKeyTile>(key, nd * 8 + 8 * (lane / 16)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816(o[mt][nd], a[mt], b[0], b[1]);
            mma_16816(o[mt][nd + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();
  }
  if (n_tiles == 0) cp_async_wait<0>();

    // Row sums over the quad that shares each row.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    for (int h = 0; h < 2; ++h) {
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 1);
      l[mt][h] += __shfl_xor_sync(0xffffffffu, l[mt][h], 2);
    }
  }

  if constexpr (WARPS_N > 1) {
    // Combine the warps' partial states (they saw different keys of the same rows) through
    // shared memory, reusing the K/V buffers.
    __syncthreads();
    float* ob = reinterpret_cast<float*>(ks);  // [WARPS_N][16][D]
    float* mb = ob + WARPS_N * 16 * D;         // [WARPS_N][16]
    float* lb = mb + WARPS_N * 16;
#pragma unroll
    for (int nd = 0; nd < DT; ++nd) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = lane / 4 + 8 * (e / 2), c = nd * 8 + 2 * (lane % 4) + e % 2;
        ob[(wn * 16 + r) * D + c] = o[0][nd][e];
      }
    }
    if (lane % 4 == 0) {
      for (int h = 0; h < 2; ++h) {
        mb[wn * 16 + lane / 4 + 8 * h] = m[0][h] * p.scale_log2;  // log2 units
        lb[wn * 16 + lane / 4 + 8 * h] = l[0][h];
      }
    }
    __syncthreads();
    // Only the item's rows (a decode item often fills 4 of the 16).
    for (int idx = tid; idx < min(rows, 16) * D; idx += kThreads) {
      const int r = idx / D, c = idx % D;
      float mm = -INFINITY;
      for (int i = 0; i < WARPS_N; ++i) mm = fmaxf(mm, mb[i * 16 + r]);
      float acc = 0.0f, ll = 0.0f;
      if (mm != -INFINITY) {
        for (int i = 0; i < WARPS_N; ++i) {
          const float f = mb[i * 16 + r] == -INFINITY ? 0.0f : exp2f(mb[i * 16 + r] - mm);
          acc += f * ob[(i * 16 + r) * D + c];
          ll += f * lb[i * 16 + r];
        }
      }
      const float val = ll > 0.0f ? acc / ll : 0.0f;
      if (w.partial < 0) {
        const int64_t token = s.q_offset + w.q_first + r / w.rg;
        p.out[(token * p.n_heads + w.head0 + r % w.rg) * D + c] = to_bf16(val);
      } else {
        p.part_o[(static_cast<int64_t>(w.partial) * 16 + r) * D + c] = val;
        if (c == 0) p.part_lse[w.partial * 16 + r] = ll > 0.0f ? mm + log2f(ll) : -INFINITY;
      }
    }
  } else {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = 16 * (wm * MT + mt) + lane / 4 + 8 * h;
        if (r >= rows) continue;
        const float inv = l[mt][h] > 0.0f ? 1.0f / l[mt][h] : 0.0f;
        const int64_t token = s.q_offset + w.q_first + r / w.rg;
        bf16* dst = p.out + (token * p.n_heads + w.head0 + r % w.rg) * D;
#pragma unroll
        for (int nd = 0; nd < DT; ++nd) {
          const int c = nd * 8 + 2 * (lane % 4);
          *reinterpret_cast<__nv_bfloat162*>(dst + c) =
              __floats2bfloat162_rn(o[mt][nd][2 * h] * inv, o[mt][nd][2 * h + 1] * inv);
        }
      }
    }
  }
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
  if (items) {
    it = items[blockIdx.x];
  } else {
    AttnWork w;
    int32_t pieces = 0;
    if (!decode_work(p.grid, p.step.seqs, p.kv.head_class, blockIdx.x, 0, &w, &pieces) ||
        pieces <= 1) {
      return;  // nothing, or one piece that wrote the output itself
    }
    it = MergeItem{w.seq,   w.q_first, w.q_count,
                   w.head0, w.rg,      static_cast<int32_t>(blockIdx.x) * p.grid.splits,
                   pieces,  0};
  }
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
