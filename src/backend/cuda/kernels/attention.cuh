// Paged sparse attention on tensor cores, one kernel for prefill and decode (FlashAttention-2
// style online softmax). A CTA takes one work item: the queries of one sequence for one KV group
// as tile rows (row r = query q_first + r / rg, head head0 + r % rg, so a GQA group's heads share
// every K/V tile it loads) and one or two ranges of key indices over the head's page list (all
// pages; sink + window pages; or the selected pages + the current one). K/V tiles of KT keys (64;
// 128 for FP8 decode) are gathered through the page table with cp.async, two or three in flight,
// and masked token-exactly.
//
// Policy (template) parameters: HEAD_DIM; WARPS_M x WARPS_N warps, rows split over WARPS_M (16
// each) and each K/V tile's keys over WARPS_N; WGMMA: the two products of a tile on Hopper's
// warpgroup MMA (wgmma.cuh) instead of per-warp mma.sync, same register layouts, so masking and
// softmax are shared. Prefill uses 8x1 (128 rows; wgmma on sm_90); decode uses 1x4 (16 rows: the
// group's heads) and merges the four warps' partial softmax states at the end.
// Split-KV items write normalised partial outputs plus log2-sum-exp; merge_kernel
// (attention_merge.cuh) combines them.
// FP8: the pools hold E4M3 bytes with a scale per key row (kv/kv_dtype.h), copied in as tiles of
// bytes (half the bytes of bf16). The scales are applied where they cost least: a key's scale
// multiplies its score column, a value's scale its probability column (after the row sum, which
// needs the probabilities themselves). On wgmma (prefill), which reads its operands from shared
// memory, a tile is widened there to bf16 (exact: every E4M3 value is a bf16). On mma.sync
// (decode) the bytes go straight into the MMA fragments (ldmatrix over bytes), widened in
// registers to f16, in one conversion instruction per pair where bf16 takes four (the conversions
// bound the kernel otherwise); so the products run on f16: Q is converted once (clamped to the f16
// range), and probabilities times value scales are divided by the largest value scale seen so
// far to stay within [0, 1] where f16 is precise, that maximum folded into the accumulator's
// rescaling (a value row 10^4 times smaller than the largest gets f16's subnormal precision).
// Decode tiles there hold 128 keys (32 per warp), so each carries as many bytes as a bf16 tile and
// its fixed costs (barriers, page-table reads, the softmax's row reductions) are paid half as
// often per key (H200, 128K keys: 1.46x -> 1.82x bf16's speed at batch 8, 1.43x -> 1.58x at
// batch 1, against 64-key tiles three in flight). The portable prefill keeps 64-key tiles.
#pragma once

#include <cfloat>

#include "backend/cuda/kernels/attention_common.cuh"
#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Byte offset of 16-byte chunk c of row j in an E4M3 tile of R rows: the bf16 tiles' swizzle over
// rows of D bytes read as D / 2 two-byte columns (rows padded to 128 bytes, AttnSmem::f8_tile).
template <int R>
__device__ __forceinline__ int e4m3_tile_offset(int row, int chunk) {
  return 2 * tile_offset<R>(row, chunk * 8);
}

// MIN_CTAS: CTAs per multiprocessor the registers must allow (decode tiles: three, as the
// planner assumes).
template <int D, int WARPS_M, int WARPS_N, int MT, bool WGMMA, int MIN_CTAS, bool FP8,
          int KT = kKeyTile>
__global__ void __launch_bounds__(32 * WARPS_M * WARPS_N, MIN_CTAS) attention_kernel(AttnParams p) {
  griddep_wait();
  griddep_launch_dependents();
  static_assert(MT == 1 || WARPS_N == 1, "split-key warps hold one m-tile");
  static_assert(!WGMMA || (WARPS_M % 4 == 0 && WARPS_N == 1 && MT == 1),
                "wgmma tiles: whole warpgroups of 64 rows, all keys of a tile per warp");
  constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  constexpr int BM = 16 * WARPS_M * MT;  // each warp holds MT m-tiles of 16 rows
  constexpr int KW = KT / WARPS_N;       // keys per warp per tile
  constexpr int NT = KW / 8;             // score n-tiles per warp
  constexpr int DT = D / 8;              // output n-tiles
  constexpr int CHUNKS = D / 8;          // 16-byte chunks per row

  // FP8 on mma.sync: E4M3 fragments widened in registers (AttnSmem: the tiles in flight).
  constexpr bool kDirect = FP8 && !WGMMA;
  constexpr AttnSmem sm = attn_smem(D, BM, FP8, WGMMA, KT);
  constexpr int kStages = sm.stages, kSlots = sm.slots;
  static_assert(WARPS_N == 1 || sm.kpos - sm.ks >= (WARPS_N * 16 * D + 2 * WARPS_N * 16) * 4,
                "the warps' partial states fit where the K/V tiles were");
  static_assert(!WGMMA || KT == kKeyTile, "wgmma products take 64-key tiles");
  // Tiles start on a 1024-byte boundary on wgmma (its descriptors' swizzle repeats every 8 rows
  // of 128 bytes), a 128-byte one elsewhere (ldmatrix rows then fall on distinct banks).
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* base = smem_raw + (sm.align - smem_addr(smem_raw) % sm.align) % sm.align;
  bf16* qs = reinterpret_cast<bf16*>(base);                    // [BM][D]
  bf16* ks = reinterpret_cast<bf16*>(base + sm.ks);            // bf16: [stages][KT][D]
  bf16* vs = reinterpret_cast<bf16*>(base + sm.vs);            // FP8 on wgmma: [KT][D]
  uint8_t* k8 = base + sm.k8;                                  // FP8: [stages][KT][>= 128]
  uint8_t* v8 = base + sm.v8;                                  // FP8: [stages][KT][>= 128]
  float* kscale = reinterpret_cast<float*>(base + sm.kscale);  // FP8: [stages][KT]
  float* vscale = reinterpret_cast<float*>(base + sm.vscale);  // FP8: [stages][KT]
  // Key positions (-1: none) and pool rows of the located tiles: the one being computed, those
  // being loaded, the one being located and the one whose page-table reads are in flight.
  int32_t* kpos = reinterpret_cast<int32_t*>(base + sm.kpos);  // [slots][KT]
  int32_t* krow = reinterpret_cast<int32_t*>(base + sm.krow);  // [slots][KT]
  int32_t* list = reinterpret_cast<int32_t*>(base + sm.list);  // [max_sel + 2]

  // The work item, its sequence and its key map live in shared memory: the loop reads them once
  // per tile at most, and held in registers (about 40) they pushed the wgmma prefill tiles, which
  // two CTAs per multiprocessor hold to 128 registers, into spilling inside the loop.
  __shared__ AttnWork w;
  __shared__ SeqInfo s;
  __shared__ KeyTiles<KT> tiles;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  {
    AttnWork item;
    if (!cta_work(p, &item)) return;
    if (tid == 0) {
      w = item;
      s = p.step.seqs[item.seq];
    }
    __syncthreads();
  }
  const int wm = warp % WARPS_M, wn = warp / WARPS_M;
  const int32_t rows = w.q_count * w.rg;
  const bool streaming = w.kind == kStreamPages;
  const int32_t hs = p.kv.head_slot[w.kv_head];
  const KvPoolView pool = p.kv.pool(streaming);
  const int32_t n_pool = pool.n;

  {
    const KeyTiles<KT> item_tiles(w, work_key_map(p, w, s, list));
    if (tid == 0) tiles = item_tiles;
  }
  __syncthreads();
  const int32_t n_tiles = tiles.n_tiles;

  // Where the keys of tile t live: one thread per key row looks it up (position and pool row),
  // so the page table is read once per key, not once per 16-byte chunk. The lookup is split so
  // the page-table read stays in flight for a whole tile: tiles.locate issues it, finish_locate
  // (an iteration later) writes the tile's slot.
  static_assert(kThreads >= KT, "one thread per key of a tile");
  auto finish_locate = [&](int slot, int j, const KeyLoc& loc) {
    kpos[slot * KT + j] = loc.pos;
    krow[slot * KT + j] = loc.row(tiles.km, n_pool, hs);
  };
  auto issue_tile = [&](int stage, int slot) {
    if constexpr (FP8) {
      constexpr int kChunks8 = D / 16;  // 16-byte chunks of an E4M3 row
      const auto* kpool = static_cast<const uint8_t*>(pool.k);
      const auto* vpool = static_cast<const uint8_t*>(pool.v);
      static_assert(kThreads % kChunks8 == 0, "a thread copies one chunk column");
      const int c = tid % kChunks8;
      for (int j = tid / kChunks8; j < KT; j += kThreads / kChunks8) {
        const bool valid = kpos[slot * KT + j] >= 0;
        const int64_t row = krow[slot * KT + j];
        const int off = stage * sm.f8_tile + e4m3_tile_offset<KT>(j, c);
        cp_async_16(k8 + off, kpool + row * D + c * 16, valid);
        cp_async_16(v8 + off, vpool + row * D + c * 16, valid);
      }
      if (tid < KT) {
        const bool valid = kpos[slot * KT + tid] >= 0;
        const int64_t row = krow[slot * KT + tid];
        cp_async_4(kscale + stage * KT + tid, pool.k_scale + row, valid);
        cp_async_4(vscale + stage * KT + tid, pool.v_scale + row, valid);
      }
    } else {
      const auto* kpool = static_cast<const bf16*>(pool.k);
      const auto* vpool = static_cast<const bf16*>(pool.v);
      static_assert(kThreads % CHUNKS == 0, "a thread copies one chunk column");
      const int c = tid % CHUNKS;
      for (int j = tid / CHUNKS; j < KT; j += kThreads / CHUNKS) {
        const bool valid = kpos[slot * KT + j] >= 0;
        const int64_t row = krow[slot * KT + j];
        const int off = stage * KT * D + tile_offset<KT>(j, c * 8);
        cp_async_16(ks + off, kpool + row * D + c * 8, valid);
        cp_async_16(vs + off, vpool + row * D + c * 8, valid);
      }
    }
  };
  // FP8: stage `stage`'s E4M3 tiles, widened into the bf16 tiles in the layout the products read.
  auto widen_tile = [&](int stage) {
    constexpr int kChunks8 = D / 16;
    for (int idx = tid; idx < 2 * KT * kChunks8; idx += kThreads) {
      const bool value = idx >= KT * kChunks8;
      const int i = value ? idx - KT * kChunks8 : idx;
      const int j = i / kChunks8, c = i % kChunks8;
      const uint4 in = *reinterpret_cast<const uint4*>((value ? v8 : k8) + stage * sm.f8_tile +
                                                       e4m3_tile_offset<KT>(j, c));
      bf16* dst = value ? vs : ks;
      const uint4 lo = make_uint4(e4m3x2_to_bf16x2(in.x), e4m3x2_to_bf16x2(in.x >> 16),
                                  e4m3x2_to_bf16x2(in.y), e4m3x2_to_bf16x2(in.y >> 16));
      const uint4 hi = make_uint4(e4m3x2_to_bf16x2(in.z), e4m3x2_to_bf16x2(in.z >> 16),
                                  e4m3x2_to_bf16x2(in.w), e4m3x2_to_bf16x2(in.w >> 16));
      *reinterpret_cast<uint4*>(dst + tile_offset<KT>(j, c * 16)) = lo;
      *reinterpret_cast<uint4*>(dst + tile_offset<KT>(j, c * 16 + 8)) = hi;
    }
  };

  // FP8: multiplies this warp's score or probability columns by one scale per key of the tile
  // (times mul).
  auto scale_columns = [&](float(&x)[MT][NT][4], const float* tile_scales, float mul) {
    const float* sc_warp = tile_scales + wn * KW;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const float s0 = sc_warp[nt * 8 + 2 * (lane % 4)] * mul;
      const float s1 = sc_warp[nt * 8 + 2 * (lane % 4) + 1] * mul;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        x[mt][nt][0] *= s0;
        x[mt][nt][1] *= s1;
        x[mt][nt][2] *= s0;
        x[mt][nt][3] *= s1;
      }
    }
  };

  load_query_tile<D, BM>(p, w, s, qs, tid, kThreads);
  // Tiles [0, stages) are located together (one key per thread, all lookups issued before the
  // first is used: one round trip to the page table), tiles [0, stages - 1) loaded; from then on
  // threads [0, KT) locate one tile per iteration.
  {
    constexpr int kRounds = (kStages * KT + kThreads - 1) / kThreads;
    KeyLoc pd[kRounds];
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int i = r * kThreads + tid, t = i / KT;
      if (t < kStages && t < n_tiles) pd[r] = tiles.locate(t, i % KT);
    }
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int i = r * kThreads + tid, t = i / KT;
      if (t < kStages && t < n_tiles) finish_locate(t, i % KT, pd[r]);
    }
  }
  if (n_tiles > 0) __syncthreads();
#pragma unroll
  for (int t = 0; t + 1 < kStages; ++t) {
    if (t < n_tiles) issue_tile(t, t);
    cp_async_commit();
  }
  KeyLoc pend{-1, 0};
  if (n_tiles > kStages && tid < KT) pend = tiles.locate(kStages, tid);

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
  // The earliest and latest positions among the warp's rows (padding rows, such as 12 of a decode
  // tile's 16 for a group of 4 heads, do not count: nothing reads them), for the whole-tile test.
  int32_t qmin = INT32_MAX, qmax = -1;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      qmin = qpos[mt][h] >= 0 ? min(qmin, qpos[mt][h]) : qmin;
      qmax = max(qmax, qpos[mt][h]);
    }
  }
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    qmin = min(qmin, __shfl_xor_sync(0xffffffffu, qmin, off));
    qmax = max(qmax, __shfl_xor_sync(0xffffffffu, qmax, off));
  }
  // FP8 on mma.sync: the accumulators are in units of this value scale (never 0: 1 / vmax must
  // stay finite while only masked keys, of scale 0, have been seen).
  float vmax = kDirect ? FLT_MIN : 1.0f;
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
    const int stage = t % kStages, slot = t % kSlots;
    // Loads of tile t + stages - 1 go out now; the lookup of the tile after it (started an
    // iteration ago) is written and the next one starts while they and tile t are in flight.
    // Buffers reused here were last read before the previous iteration's closing barrier. One
    // commit group per iteration (empty past the end), so waiting for all but the newest
    // stages - 1 groups is waiting for tile t.
    const int32_t next = t + kStages - 1;
    if (next < n_tiles) issue_tile(next % kStages, next % kSlots);
    cp_async_commit();
    if (next + 1 < n_tiles && tid < KT) finish_locate((next + 1) % kSlots, tid, pend);
    if (next + 2 < n_tiles && tid < KT) pend = tiles.locate(next + 2, tid);
    cp_async_wait<kStages - 1>();
    if constexpr (FP8 && !kDirect) {
      __syncthreads();
      widen_tile(stage);
    }
    if constexpr (WGMMA) fence_proxy_async();
    __syncthreads();
    if constexpr (kDirect) {
      if (t == 0) {
        // Q to f16 in place, once (it arrived with tile 0), its dims permuted within each 16-dim
        // chunk as the key fragments deliver theirs (compute QK below): dim pair i goes to
        // column pair (i % 2) * 4 + i / 2, so plain ldmatrix gives the matching A fragments.
        for (int idx = tid; idx < BM * D / 16; idx += kThreads) {
          const int r = idx / (D / 16), ch = idx % (D / 16);
          uint4* lo = reinterpret_cast<uint4*>(qs + tile_offset<BM>(r, ch * 16));
          uint4* hi = reinterpret_cast<uint4*>(qs + tile_offset<BM>(r, ch * 16 + 8));
          const uint4 a = *lo, b = *hi;
          const uint32_t in[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
          uint32_t out[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&in[i]));
            out[(i % 2) * 4 + i / 2] = pack_f16(fminf(fmaxf(f.x, -65504.0f), 65504.0f),
                                                fminf(fmaxf(f.y, -65504.0f), 65504.0f));
          }
          *lo = make_uint4(out[0], out[1], out[2], out[3]);
          *hi = make_uint4(out[4], out[5], out[6], out[7]);
        }
        __syncthreads();
      }
    }
    const bf16* kt = ks + (FP8 ? 0 : stage * KT * D);
    const bf16* vt = vs + (FP8 ? 0 : stage * KT * D);

    // S = Q K^T for this warp's rows x KW keys.
    float sc[MT][NT][4];
    if constexpr (!WGMMA) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int i = 0; i < NT; ++i)
          sc[mt][i][0] = sc[mt][i][1] = sc[mt][i][2] = sc[mt][i][3] = 0.0f;
      }
    }
    if constexpr (WGMMA) {
      wgmma_qk<D, BM>(sc[0], qs, kt, warp / 4);
    } else if constexpr (kDirect) {
      // E4M3 keys: ldmatrix over bytes gives lane l dims 4q..4q+3 (q = l % 4) of a 16-dim chunk
      // of key l / 4, which the MMA takes as its k indices 2q, 2q+1, 2q+8, 2q+9. Q's dims were
      // permuted alike (above), so each product sums the same terms, in another order.
      const uint8_t* kt8 = k8 + stage * sm.f8_tile;
#pragma unroll
      for (int kk = 0; kk < D / 16; kk += 2) {
        uint32_t qf[MT][2][4];  // chunks kk and kk + 1
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            ldmatrix_x4(qf[mt][h], qs + tile_offset<BM>(
                                            16 * (wm * MT + mt) + (lane % 8) + 8 * ((lane / 8) % 2),
                                            (kk + h) * 16 + 8 * (lane / 16)));
          }
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt += 2) {
          // Matrices: keys of n-tiles nt, nt + 1 in chunk kk, then the same in chunk kk + 1.
          uint32_t b[4];
          const int key = wn * KW + nt * 8 + (lane % 8) + 8 * ((lane / 8) % 2);
          ldmatrix_x4(b, kt8 + e4m3_tile_offset<KT>(key, kk + lane / 16));
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const uint32_t b0 = e4m3x2_to_f16x2(b[i]), b1 = e4m3x2_to_f16x2(b[i] >> 16);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
              mma_16816_f16(sc[mt][nt + i % 2], qf[mt][i / 2], b0, b1);
            }
          }
        }
      }
    } else {
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
          ldmatrix_x4(b, kt + tile_offset<KT>(key, kk * 16 + 8 * ((lane / 8) % 2)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816(sc[mt][nt], qf[mt], b[0], b[1]);
            mma_16816(sc[mt][nt + 1], qf[mt], b[2], b[3]);
          }
        }
      }
    }

    // FP8: each score column times its key's scale (a masked key's 0 gives a finite 0, then -inf).
    if constexpr (FP8) scale_columns(sc, kscale + stage * KT, 1.0f);

    // FP8 on mma.sync: the largest value scale of the warp's keys so far (a running maximum, so
    // the accumulator rarely needs rescaling for it); vratio rescales from the last tile's.
    float vratio = 1.0f;
    if constexpr (kDirect) {
      const float* vs_warp = vscale + stage * KT + wn * KW;
      float mx = 0.0f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        mx = fmaxf(mx,
                   fmaxf(vs_warp[nt * 8 + 2 * (lane % 4)], vs_warp[nt * 8 + 2 * (lane % 4) + 1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float vnew = fmaxf(vmax, mx);
      vratio = vmax / vnew;
      vmax = vnew;
    }

    // Mask by position (skipped for tiles every row of the warp sees whole), then the online
    // softmax update and the output's rescaling (times vratio on mma.sync FP8).
    const int32_t* tpos = kpos + slot * KT + wn * KW;
    if (!tile_whole<KW>(tpos, qmin, qmax, streaming, p.sink, window, lane)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        mask_scores<NT>(sc[mt], tpos, qpos[mt], streaming, p.sink, window, lane);
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float alpha[2];
      online_softmax<NT>(sc[mt], m[mt], l[mt], p.scale_log2, alpha);
      rescale_output<DT>(o[mt], alpha[0] * vratio, alpha[1] * vratio);
    }
    // FP8: each probability column times its value's scale: P diag(s) V = P (diag(s) V) (on
    // mma.sync divided by the tile's largest, the accumulator being in units of it).
    if constexpr (FP8) scale_columns(sc, vscale + stage * KT, kDirect ? 1.0f / vmax : 1.0f);

    // O += P V: the score accumulators become the A fragments (16 keys per MMA step).
    if constexpr (WGMMA) {
      wgmma_pv<D>(o[0], sc[0], vt);
    } else {
      // E4M3 values (kDirect): ldmatrix.trans over bytes gives lane l, for keys 2q and 2q+1 of
      // an 8-key matrix, the bytes of dims 2(l / 4) and 2(l / 4) + 1 of a 16-dim chunk: [k0 d0,
      // k0 d1, k1 d0, k1 d1]. A byte permute pairs the keys per dim, so output n-tile 2c holds
      // chunk c's even dims and 2c + 1 its odd ones (out_col below). Products in f16 there.
      auto pack_p = [](float lo, float hi) {
        return kDirect ? pack_f16(lo, hi) : pack_bf16(lo, hi);
      };
#pragma unroll
      for (int c = 0; c < KW / 16; ++c) {
        uint32_t a[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          a[mt][0] = pack_p(sc[mt][2 * c][0], sc[mt][2 * c][1]);
          a[mt][1] = pack_p(sc[mt][2 * c][2], sc[mt][2 * c][3]);
          a[mt][2] = pack_p(sc[mt][2 * c + 1][0], sc[mt][2 * c + 1][1]);
          a[mt][3] = pack_p(sc[mt][2 * c + 1][2], sc[mt][2 * c + 1][3]);
        }
        // Matrices: keys [0, 8) and [8, 16) of the step in 16 bytes of their rows, then the next
        // 16 (kDirect: chunks ch and ch + 1 of E4M3; else dims nd..nd+7 then nd+8..nd+15).
        const int key = wn * KW + c * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
#pragma unroll
        for (int nd = 0; nd < DT; nd += 4) {
          if constexpr (kDirect) {
            const int ch = nd / 2;
            uint32_t b[4];
            ldmatrix_x4_trans(b,
                              v8 + stage * sm.f8_tile + e4m3_tile_offset<KT>(key, ch + lane / 16));
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint32_t even0 = e4m3x2_to_f16x2(__byte_perm(b[2 * h], 0, 0x0020));
              const uint32_t even1 = e4m3x2_to_f16x2(__byte_perm(b[2 * h + 1], 0, 0x0020));
              const uint32_t odd0 = e4m3x2_to_f16x2(__byte_perm(b[2 * h], 0, 0x0031));
              const uint32_t odd1 = e4m3x2_to_f16x2(__byte_perm(b[2 * h + 1], 0, 0x0031));
#pragma unroll
              for (int mt = 0; mt < MT; ++mt) {
                mma_16816_f16(o[mt][nd + 2 * h], a[mt], even0, even1);
                mma_16816_f16(o[mt][nd + 2 * h + 1], a[mt], odd0, odd1);
              }
            }
          } else {
#pragma unroll
            for (int h = 0; h < 4; h += 2) {
              uint32_t b[4];
              ldmatrix_x4_trans(b, vt + tile_offset<KT>(key, (nd + h) * 8 + 8 * (lane / 16)));
#pragma unroll
              for (int mt = 0; mt < MT; ++mt) {
                mma_16816(o[mt][nd + h], a[mt], b[0], b[1]);
                mma_16816(o[mt][nd + h + 1], a[mt], b[2], b[3]);
              }
            }
          }
        }
      }
    }
    __syncthreads();
  }
  if (n_tiles == 0) cp_async_wait<0>();

  // Output column of accumulator o[.][nd][e] (element e of a C fragment: column 2q + e % 2).
  // E4M3 values widened in registers: n-tiles 2c and 2c + 1 hold the even and the odd dims of
  // chunk c (compute PV above).
  auto out_col = [&](int nd, int e) {
    return kDirect ? 16 * (nd / 2) + 4 * (lane % 4) + 2 * (e % 2) + nd % 2
                   : nd * 8 + 2 * (lane % 4) + e % 2;
  };

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
        const int r = lane / 4 + 8 * (e / 2);
        ob[(wn * 16 + r) * D + out_col(nd, e)] = o[0][nd][e] * vmax;
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
        const float inv = l[mt][h] > 0.0f ? vmax / l[mt][h] : 0.0f;
        const int64_t token = s.q_offset + w.q_first + r / w.rg;
        bf16* dst = p.out + (token * p.n_heads + w.head0 + r % w.rg) * D;
#pragma unroll
        for (int nd = 0; nd < DT; ++nd) {
          if constexpr (kDirect) {
            // Columns c, c + 2 of the even n-tile and c + 1, c + 3 of the odd one: one store.
            if (nd % 2 == 0) {
              const __nv_bfloat162 lo =
                  __floats2bfloat162_rn(o[mt][nd][2 * h] * inv, o[mt][nd + 1][2 * h] * inv);
              const __nv_bfloat162 hi =
                  __floats2bfloat162_rn(o[mt][nd][2 * h + 1] * inv, o[mt][nd + 1][2 * h + 1] * inv);
              uint2 both;
              both.x = *reinterpret_cast<const uint32_t*>(&lo);
              both.y = *reinterpret_cast<const uint32_t*>(&hi);
              *reinterpret_cast<uint2*>(dst + out_col(nd, 0)) = both;
            }
          } else {
            *reinterpret_cast<__nv_bfloat162*>(dst + out_col(nd, 0)) =
                __floats2bfloat162_rn(o[mt][nd][2 * h] * inv, o[mt][nd][2 * h + 1] * inv);
          }
        }
      }
    }
  }
}

}  // namespace lserve::cuda
