// Dynamic block-sparse prefill on the GPU, the estimates and the keep rule of
// sparse/prefill_blocks.h (the CPU reference; docs/sparse-attention.md, "Dynamic prefill
// sparsity"):
//  1. prefill_mass_kernel: a query block's share per key block, as a product of 16 rows per query
//     head against columns of keys, softmaxed per row over its causal columns, the probabilities
//     summed per 128-key block and averaged over the rows present. Two estimates, one kernel
//     (template argument S, the keys per column):
//     - antidiagonal (S = 8): row a of head g is the queries at positions 8a + 7, ..., 8a (in
//       that order) side by side, column b the keys 8b, ..., 8b + 7, so <row a, column b> sums one
//       antidiagonal of the 8 x 8 block of Q K^T; scores scaled by scale / 8, visible while b <= a.
//     - sampled rows (S = 1): row j is the query at position 128 qb + 8j + 7 (the block's last
//       query where that lies past it), column b key b; scores scaled by scale, visible while
//       b <= the row's position. The same number of products, 8x the exponentials.
//  2. prefill_keep_kernel: one CTA per item: the blocks sorted by share (ties: lower block
//     first, bitonic in shared memory), the fewest largest whose sum reaches the threshold
//     (summed in double in that order, as the CPU does, so the same shares give the same
//     blocks), plus block 0 and the diagonal block; written ascending.
//
// The estimate in one pass over the keys. An item is (query block, retrieval KV head); a pass
// takes four of its query heads, 64 rows (16 per head) of 8 * head_dim (antidiagonal) or head_dim
// terms. Keys stream through in tiles of 128 columns (antidiagonal: 1,024 keys, eight 128-key
// blocks) or 256 (sampled rows: two blocks), each tile in pipeline stages of 64 of the products'
// terms (one stage: the tile's columns x 64 bf16), loaded with cp.async. Two warpgroups share the
// queries and split each stage: warpgroup wg loads and multiplies its half of the tile's columns
// (four key blocks, or one), warp w % 4 of it the rows of head g0 + w % 4, and waits at its own
// barrier per stage, so the warpgroups meet only at the start and end of a pass. After a half
// tile each row knows, per block, the sum of exp(score - the half tile's row maximum), and updates
// its running maximum and normaliser (online softmax, per warpgroup); the block sums and half-tile
// maxima go to a per-CTA scratch area (a row's share of a block needs its final normaliser, known
// only after the last tile). The epilogue merges the two warpgroups' normalisers, turns the sums
// into shares and sums the rows per block. Each warpgroup's score tile of a stage is one warpgroup
// MMA (wgmma, m64n64k16 or m64n128k16, both operands in shared memory) on sm_90a, or m16n8k16
// mma.sync per warp elsewhere; the rest is shared. Scores are kept in log2 units (the scale and
// log2(e) folded in). A persistent grid (one CTA per SM: the antidiagonal's rows alone take
// 1,024 x head_dim bytes of shared memory) walks the items from the longest down.
#pragma once

#include <cfloat>

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Rows per query block: one per 8 positions (kAntidiagStride and kSampledRowStride of
// sparse/prefill_blocks.h; launch.cu checks they agree).
constexpr int kMassRowStride = 8;
constexpr int kMassBlock = kKeptBlockKeys;
constexpr int kMassHeads = 4;               // query heads per pass over the keys
constexpr int kMassRows = 16 * kMassHeads;  // rows per pass
static_assert(kMassBlock / kMassRowStride == 16);
constexpr int kMassWarps = 8;  // two warpgroups, one per half tile
constexpr int kMassThreads = 32 * kMassWarps;
constexpr int kMassChunk = 64;  // product terms per pipeline stage

// Keys per column: 8 for the antidiagonal, 1 for sampled rows.
constexpr int mass_stride(bool sampled_rows) { return sampled_rows ? 1 : kMassRowStride; }
// Columns per warpgroup and tile: four 128-key blocks (antidiagonal) or one (sampled rows).
constexpr int mass_half(int S) { return S == 1 ? 128 : 64; }
constexpr int mass_half_blocks(int S) { return mass_half(S) * S / kMassBlock; }

// Pipeline stages: with wgmma a stage is free again two steps later (one group stays in flight).
constexpr int prefill_mass_stages(bool wgmma) { return wgmma ? 6 : 2; }

constexpr int prefill_mass_smem(int head_dim, bool wgmma, int S) {
  return 1024 + kMassRows * S * head_dim * 2 +
         prefill_mass_stages(wgmma) * 2 * mass_half(S) * kMassChunk * 2;
}

// Scratch floats per CTA for items of up to max_blocks key blocks: per block and row the sum of
// exp(score - half-tile maximum), per half tile and row that maximum (two halves per whole tile:
// a tile is written whole even where the item's blocks end inside it).
constexpr int64_t prefill_mass_scratch(int max_blocks, int S) {
  const int tile_blocks = 2 * mass_half_blocks(S);
  return static_cast<int64_t>(kMassRows) *
         (max_blocks + 2 * ((max_blocks + tile_blocks - 1) / tile_blocks));
}

template <int D, bool kWgmma, int S>
__global__ void __launch_bounds__(kMassThreads, 1) prefill_mass_kernel(PrefillMassParams p) {
  griddep_wait();
  griddep_launch_dependents();
  constexpr int kHalf = mass_half(S), kCols = 2 * kHalf, kHalfBlocks = mass_half_blocks(S);
  constexpr int kBlockTiles = kHalf / 8 / kHalfBlocks;  // 8-column MMA tiles per key block
  constexpr int kChunks = S * D / kMassChunk, kStages = prefill_mass_stages(kWgmma);
  constexpr int kAhead = kWgmma ? kStages - 2 : kStages - 1;  // stages loaded ahead of the MMA
  constexpr int kStageElems = kCols * kMassChunk;
  constexpr int kLoads = kCols * (kMassChunk / 8) / kMassThreads;  // 16-byte copies a stage
  extern __shared__ __align__(16) unsigned char smem_raw[];
  // qs: [S D / 64][64 rows][64] and the stages [kStages][kCols columns][64], 128-byte swizzled
  // (wgmma.cuh tile_offset), 1024-byte aligned for the wgmma descriptors.
  bf16* qs = reinterpret_cast<bf16*>(smem_raw + (1024 - smem_addr(smem_raw) % 1024) % 1024);
  bf16* ks = qs + kMassRows * S * D;
  __shared__ float s_max[2][kMassRows], s_sum[2][kMassRows];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wg = warp / 4, wr = warp % 4;  // half tile; head (16 rows) within the pass
  const int row0 = 16 * wr + lane / 4;     // this thread's rows: row0 and row0 + 8
  float* sums = p.scratch + static_cast<int64_t>(blockIdx.x) * p.scratch_stride;  // [block][row]
  float* hmax = sums + static_cast<int64_t>(kMassRows) * p.max_blocks;  // [half tile][row]
  const float k2 = p.scale / S * 1.4426950408889634f;
  // This thread's copies: 16-byte piece `ch` of columns col0 + 16 i, all in its warpgroup's half
  // of the tile (each warpgroup loads the stages' columns it multiplies, so the two meet only
  // at the start and the end of a pass and otherwise run apart: one's exponentials while the
  // other's products).
  const int ch = tid % 8, col0 = wg * kHalf + (tid % 128) / 8;
  static_assert(kLoads * 128 / 8 == kHalf && 128 / 8 == 16);

  for (int32_t i = blockIdx.x; i < p.n_items; i += gridDim.x) {
    const int32_t item = p.n_items - 1 - i;  // items come in query-block order: longest last
    const PrefillMassItem it = p.items[item];
    const int32_t pos0 = it.start_pos + it.r0, pos1 = it.start_pos + it.r1 - 1;
    const int32_t qb = pos0 / kMassBlock;
    // Row j of a head is present while a_first <= a_base + j <= a_last (both estimates).
    const int32_t a_first = pos0 / kMassRowStride, a_last = pos1 / kMassRowStride;
    const int32_t a_base = qb * (kMassBlock / kMassRowStride);
    const int32_t nk = pos1 + 1, n_kb = qb + 1;
    const int32_t n_tiles = pos1 / S / kCols + 1;
    const int32_t n_steps = n_tiles * kChunks;
    const int32_t hs = p.head_slot[it.kv_head];
    const float inv_rows = 1.0f / static_cast<float>(p.group * (a_last - a_first + 1));
    float* mass = p.mass + static_cast<int64_t>(item) * p.max_blocks;
    // Pages hold whole columns (8 consecutive keys) when the page size is a multiple of 8: then
    // a column's pool row is looked up once per tile, else once per key.
    const bool whole_cols = p.page_size % S == 0;
    auto key_row = [&](int32_t key) -> int64_t {
      const int32_t page = p.page_indices[it.page_base + key / p.page_size];
      return (static_cast<int64_t>(page) * p.n_pool + hs) * p.page_size + key % p.page_size;
    };
    int64_t col_row[kLoads];   // pool row of key S b (slot 0) of this thread's columns in the tile
    int32_t col_keys[kLoads];  // keys of that column before the last query's position + 1
    auto tile_rows = [&](int32_t t) {
#pragma unroll
      for (int l = 0; l < kLoads; ++l) {
        const int32_t key = (t * kCols + col0 + 16 * l) * S;
        col_keys[l] = nk - key;
        col_row[l] = whole_cols && key < nk ? key_row(key) : 0;
      }
    };

    // Pipeline step j: stage j % kStages holds terms [64 c, 64 c + 64) of columns
    // kCols t .. kCols (t + 1) - 1 (t = j / kChunks, c = j % kChunks): slot 64 c / D of each
    // column, i.e. key S column + that slot, dims from 64 c % D (keys past the last query's are
    // zeros).
    // Called in step order; a step of the next tile first looks up that tile's rows.
    int32_t rows_tile = -1;
    auto load_stage = [&](int32_t j) {
      if (j >= n_steps) return;
      const int32_t t = j / kChunks, c = j % kChunks;
      if (t != rows_tile) {
        tile_rows(t);
        rows_tile = t;
      }
      const int slot = c * kMassChunk / D, dim0 = c * kMassChunk % D;
      bf16* dst = ks + (j % kStages) * kStageElems;
#pragma unroll
      for (int l = 0; l < kLoads; ++l) {
        const bool valid = slot < col_keys[l];
        int64_t row = col_row[l] + slot;
        if (!whole_cols && valid) row = key_row((t * kCols + col0 + 16 * l) * S + slot);
        cp_async_16(dst + tile_offset<kCols>(col0 + 16 * l, ch * 8),
                    p.k + (valid ? row : 0) * D + dim0 + ch * 8, valid);
      }
    };

    for (int32_t g0 = 0; g0 < p.group; g0 += kMassHeads) {
      const bool head_ok = g0 + wr < p.group;
      // This thread's rows: whether present, and the last column each sees.
      int32_t row_last[2];
      bool row_ok[2];
      for (int h = 0; h < 2; ++h) {
        const int32_t a = a_base + row0 % 16 + 8 * h;
        row_ok[h] = head_ok && a >= a_first && a <= a_last;
        row_last[h] = S == 1 ? min(a * kMassRowStride + kMassRowStride - 1, pos1) : a;
      }
      const bool rows_full = row_ok[0] && row_ok[1];
      const int32_t rows_last = min(row_last[0], row_last[1]);
      // The query rows of heads g0 .. g0 + 3 (slot s of antidiagonal row a: position 8a + 7 - s;
      // sampled row j: position row_last), shared by both warpgroups: their own group of loads,
      // waited for by the whole CTA.
      for (int idx = tid; idx < kMassRows * S * (D / 8); idx += kMassThreads) {
        const int qc = idx % (D / 8), s = (idx / (D / 8)) % S, r = idx / (D / 8 * S);
        const int w = r / 16, j = r % 16;
        int32_t pos = (a_base + j) * kMassRowStride + kMassRowStride - 1 - s;
        bool valid = a_base + j >= a_first && a_base + j <= a_last;
        if constexpr (S == 1) {
          pos = min(pos, pos1);
        } else {
          valid = pos >= pos0 && pos <= pos1;
        }
        valid = valid && g0 + w < p.group;
        const int64_t token = valid ? it.q_offset + (pos - it.start_pos) : 0;
        const int32_t head = it.kv_head * p.group + g0 + (valid ? w : 0);
        const int col = s * D + qc * 8;
        cp_async_16(qs + (col / 64) * kMassRows * 64 + tile_offset<kMassRows>(r, col % 64),
                    p.q + (token * p.n_heads + head) * D + qc * 8, valid);
      }
      cp_async_commit();
      rows_tile = -1;
      for (int j = 0; j < kAhead; ++j) {
        load_stage(j);
        cp_async_commit();
      }
      cp_async_wait<kAhead>();
      fence_proxy_async();
      __syncthreads();

      float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // log2 units
      float sc[kHalf / 8][4];
      // Step j's stage half has landed for every thread of the warpgroup, and the half loaded
      // kAhead steps ahead is no longer read (its MMA retired before the barrier).
      auto begin_step = [&](int32_t j) {
        cp_async_wait<kAhead - 1>();
        fence_proxy_async();
        named_barrier_sync(1 + wg, 128);
        load_stage(j + kAhead);
        cp_async_commit();
      };
      // This warpgroup's half of step j's stage.
      auto stage = [&](int32_t j) { return ks + (j % kStages) * kStageElems + wg * kHalf * 64; };
      for (int32_t t = 0; t < n_tiles; ++t) {
        if constexpr (kWgmma) {
          // One group per stage, all adding to the same scores; the operand fences stay outside
          // the chain so that the groups overlap (one in flight while the next stage is waited).
          begin_step(t * kChunks);
          wgmma_qk_issue<kMassChunk, kMassRows, kHalf>(sc, qs, stage(t * kChunks), 0);
          for (int c = 1; c < kChunks; ++c) {
            wgmma_wait<1>();
            begin_step(t * kChunks + c);
            wgmma_qk_issue<kMassChunk, kMassRows, kHalf, false>(sc, qs + c * kMassRows * 64,
                                                                stage(t * kChunks + c), 0, true);
          }
          wgmma_wait<0>();
          wgmma_fence_operand(sc);
        } else {
#pragma unroll
          for (auto& f : sc) f[0] = f[1] = f[2] = f[3] = 0.0f;
          for (int c = 0; c < kChunks; ++c) {
            begin_step(t * kChunks + c);
            const bf16* qc = qs + c * kMassRows * 64;
            const bf16* kc = stage(t * kChunks + c);
#pragma unroll
            for (int kk = 0; kk < kMassChunk / 16; ++kk) {
              uint32_t a[4];
              ldmatrix_x4(a,
                          qc + tile_offset<kMassRows>(16 * wr + (lane % 8) + 8 * ((lane / 8) % 2),
                                                      kk * 16 + 8 * (lane / 16)));
#pragma unroll
              for (int np = 0; np < kHalf / 16; ++np) {
                uint32_t b[4];
                ldmatrix_x4(b, kc + tile_offset<kCols>(16 * np + (lane % 8) + 8 * (lane / 16),
                                                       kk * 16 + 8 * ((lane / 8) % 2)));
                mma_16816(sc[2 * np], a, b[0], b[1]);
                mma_16816(sc[2 * np + 1], a, b[2], b[3]);
              }
            }
          }
        }

        // This warpgroup's half of tile t is complete. Per row: the half tile's maximum, the
        // block sums relative to it (lane q of a quad writes block q), the running maximum and
        // normaliser. Masking only where some column of the warp's lies past some row (the
        // diagonal's tiles, rows outside the item, absent heads).
        const int32_t half = 2 * t + wg, col_first = half * kHalf;
        if (!__all_sync(0xffffffffu, rows_full && col_first + kHalf - 1 <= rows_last)) {
#pragma unroll
          for (int nt = 0; nt < kHalf / 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int32_t col = col_first + nt * 8 + 2 * (lane % 4) + e % 2;
              if (!row_ok[e / 2] || col > row_last[e / 2]) sc[nt][e] = -INFINITY;
            }
          }
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mt = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < kHalf / 8; ++nt) {
            mt = fmaxf(mt, fmaxf(sc[nt][2 * h], sc[nt][2 * h + 1]));
          }
          mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
          mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 2));
          const float mt2 = mt * k2;                        // log2 units (k2 > 0)
          const float base = mt == -INFINITY ? 0.0f : mt2;  // no visible column: sums are 0
          const int row = row0 + 8 * h;
          float half_sum = 0.0f;
#pragma unroll
          for (int bb = 0; bb < kHalfBlocks; ++bb) {
            float bs = 0.0f;
#pragma unroll
            for (int nt = kBlockTiles * bb; nt < kBlockTiles * (bb + 1); ++nt) {
              bs += fast_exp2(fmaf(sc[nt][2 * h], k2, -base)) +
                    fast_exp2(fmaf(sc[nt][2 * h + 1], k2, -base));
            }
            bs += __shfl_xor_sync(0xffffffffu, bs, 1);
            bs += __shfl_xor_sync(0xffffffffu, bs, 2);
            half_sum += bs;
            const int32_t kb = half * kHalfBlocks + bb;
            if (bb == lane % 4 && kb < n_kb) sums[static_cast<int64_t>(kb) * kMassRows + row] = bs;
          }
          if (lane % 4 == 0) hmax[half * kMassRows + row] = mt == -INFINITY ? -INFINITY : mt2;
          if (mt != -INFINITY) {
            const float mn = fmaxf(m[h], mt2);
            l[h] = l[h] * fast_exp2(m[h] - mn) + half_sum * fast_exp2(mt2 - mn);
            m[h] = mn;
          }
        }
      }
      cp_async_wait<0>();

      // Epilogue: each row's maximum and normaliser over both warpgroups' halves; then row r's
      // share of block kb is sums[kb][r] 2^(hmax[its half tile][r] - max_r) / norm_r, and warp w
      // sums blocks w, w + 8, ... over the 64 rows.
      if (lane % 4 == 0) {
        for (int h = 0; h < 2; ++h) {
          s_max[wg][row0 + 8 * h] = m[h];
          s_sum[wg][row0 + 8 * h] = l[h];
        }
      }
      __syncthreads();
      if (tid < kMassRows) {
        const float m0 = s_max[0][tid], m1 = s_max[1][tid];
        const float mm = fmaxf(m0, m1);
        const float norm = mm == -INFINITY
                               ? 0.0f
                               : s_sum[0][tid] * exp2f(m0 - mm) + s_sum[1][tid] * exp2f(m1 - mm);
        s_max[0][tid] = mm;
        s_sum[0][tid] = norm > 0.0f ? 1.0f / norm : 0.0f;
      }
      __syncthreads();  // row statistics and the scratch writes are visible to every thread
      for (int32_t kb = warp; kb < n_kb; kb += kMassWarps) {
        float v = 0.0f;
        for (int r = lane; r < kMassRows; r += 32) {
          if (s_sum[0][r] > 0.0f) {
            v += sums[static_cast<int64_t>(kb) * kMassRows + r] *
                 exp2f(hmax[kb / kHalfBlocks * kMassRows + r] - s_max[0][r]) * s_sum[0][r];
          }
        }
        v = warp_sum(v);
        if (lane == 0) mass[kb] = (g0 == 0 ? 0.0f : mass[kb]) + v * inv_rows;
      }
      __syncthreads();  // the next pass rewrites the queries, stages, statistics and scratch
    }
  }
}

// One CTA of kKeepThreads per item; shared memory: two arrays of the padded block count.
constexpr int kKeepThreads = 512;

__global__ void __launch_bounds__(kKeepThreads) prefill_keep_kernel(PrefillKeepParams p) {
  griddep_wait();
  griddep_launch_dependents();
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const PrefillMassItem it = p.items[blockIdx.x];
  const int32_t n = (it.start_pos + it.r0) / kMassBlock + 1;
  int32_t n2 = 1;
  while (n2 < n) n2 *= 2;
  float* key = reinterpret_cast<float*>(smem_raw);  // [n2] shares, -1 past n
  int32_t* idx = reinterpret_cast<int32_t*>(key + n2);
  const float* mass = p.mass + static_cast<int64_t>(blockIdx.x) * p.max_blocks;
  int32_t* kept = p.kept + static_cast<int64_t>(blockIdx.x) * p.max_blocks;
  const int tid = threadIdx.x;
  auto finish = [&](int32_t c) {
    p.count[blockIdx.x] = c;
    if (p.totals) {
      atomicAdd(&p.totals[0], static_cast<unsigned long long>(c));
      atomicAdd(&p.totals[1], static_cast<unsigned long long>(n));
    }
  };
  if (it.threshold >= 1.0) {  // dense: every block
    for (int32_t i = tid; i < n; i += kKeepThreads) kept[i] = i;
    if (tid == 0) finish(n);
    return;
  }
  for (int32_t i = tid; i < n2; i += kKeepThreads) {
    key[i] = i < n ? mass[i] : -1.0f;
    idx[i] = i;
  }
  __syncthreads();
  // Bitonic sort, descending by share, ascending by block on equal shares.
  auto before = [&](int32_t x, int32_t y) {
    return key[x] > key[y] || (key[x] == key[y] && idx[x] < idx[y]);
  };
  for (int32_t k = 2; k <= n2; k *= 2) {
    for (int32_t j = k / 2; j > 0; j /= 2) {
      for (int32_t i = tid; i < n2; i += kKeepThreads) {
        const int32_t o = i ^ j;
        if (o <= i) continue;
        const bool up = (i & k) == 0;
        if (up ? before(o, i) : before(i, o)) {
          const float tk = key[i];
          key[i] = key[o];
          key[o] = tk;
          const int32_t ti = idx[i];
          idx[i] = idx[o];
          idx[o] = ti;
        }
      }
      __syncthreads();
    }
  }
  // How many of the largest shares reach the threshold (in double, in sorted order, as the CPU
  // sums them), then a keep flag per block (reusing the share array), then the ascending list.
  __shared__ int32_t s_take;
  if (tid == 0) {
    double sum = 0.0;
    int32_t take = 0;
    while (take < n && sum < it.threshold) sum += key[take++];
    s_take = take;
  }
  __syncthreads();
  const int32_t take = s_take;
  int32_t* flag = reinterpret_cast<int32_t*>(key);  // the shares are no longer needed
  for (int32_t i = tid; i < n; i += kKeepThreads) flag[i] = i == 0 || i == n - 1;
  __syncthreads();
  for (int32_t i = tid; i < take; i += kKeepThreads) flag[idx[i]] = 1;
  __syncthreads();
  if (tid == 0) {
    int32_t c = 0;
    for (int32_t i = 0; i < n; ++i) {
      if (flag[i]) kept[c++] = i;
    }
    finish(c);
  }
}

constexpr int prefill_keep_smem(int max_blocks) {
  int n2 = 1;
  while (n2 < max_blocks) n2 *= 2;
  return n2 * 8;
}

}  // namespace lserve::cuda
