// Dynamic block-sparse prefill on the GPU, the estimate and the keep rule of
// sparse/prefill_blocks.h (the CPU reference; docs/sparse-attention.md, "Dynamic prefill
// sparsity"):
//  1. prefill_mass_kernel: one CTA per item (query block, retrieval KV head). The antidiagonal
//     estimate as a product of compressed rows: compressed query row a of head g is the queries
//     at positions 8a + 7, ..., 8a (in that order) side by side, compressed key column b the keys
//     8b, ..., 8b + 7, so <row a, column b> sums one antidiagonal of the 8 x 8 block of Q K^T.
//     Rows are softmaxed over their causal columns (b <= a), scaled by scale / 8, and the
//     probabilities summed per 128-key block (16 columns) and averaged over the rows present.
//     Two passes over the keys: the rows' maxima and sums, then the block sums (a row's share
//     of a block needs its final normaliser; keeping per-block partials instead would take a
//     row x block array per item).
//  2. prefill_keep_kernel: one CTA per item: the blocks sorted by share (ties: lower block
//     first, bitonic in shared memory), the fewest largest whose sum reaches the threshold
//     (summed in double in that order, as the CPU does, so the same shares give the same
//     blocks), plus block 0 and the diagonal block; written ascending.
//
// Layout (prefill_mass_kernel, 4 warps): warp w holds compressed rows of query head g0 + w (16
// rows: the 16 antidiagonal rows of a 128-position block) as the A operand of m16n8k16 MMAs over
// K = 8 x head_dim; a key tile is one 128-key block = 16 compressed columns of 8 x head_dim,
// double-buffered with cp.async. Shared memory: Q 4 x 16 x 8d bf16 (128 KB at d 128) + two key
// tiles (64 KB): one CTA per SM.
#pragma once

#include <cfloat>

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

constexpr int kMassStride = 8;  // sparse/prefill_blocks.h kAntidiagStride
constexpr int kMassBlock = kKeptBlockKeys;
constexpr int kMassWarps = 4;                        // query heads per pass over the keys
constexpr int kMassCols = kMassBlock / kMassStride;  // compressed columns (rows) per block

constexpr int prefill_mass_smem(int head_dim) {
  return 128 + (kMassWarps + 2) * kMassCols * kMassStride * head_dim * 2;
}

template <int D>
__global__ void __launch_bounds__(32 * kMassWarps, 1) prefill_mass_kernel(PrefillMassParams p) {
  griddep_wait();
  griddep_launch_dependents();
  constexpr int S = kMassStride, W = S * D, C = kMassCols;
  constexpr int kThreads = 32 * kMassWarps;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw + (128 - smem_addr(smem_raw) % 128) % 128);
  bf16* ks = qs + kMassWarps * C * W;  // [2][C][W]

  const PrefillMassItem it = p.items[blockIdx.x];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int32_t pos0 = it.start_pos + it.r0, pos1 = it.start_pos + it.r1 - 1;
  const int32_t qb = pos0 / kMassBlock;
  const int32_t a_first = pos0 / S, a_last = pos1 / S, a_base = qb * C;
  const int32_t nk = pos1 + 1, n_kb = qb + 1;
  const int32_t hs = p.head_slot[it.kv_head];
  const float inv_rows = 1.0f / static_cast<float>(p.group * (a_last - a_first + 1));
  const float alpha = p.scale / S;
  float* mass = p.mass + static_cast<int64_t>(blockIdx.x) * p.max_blocks;
  for (int i = tid; i < n_kb; i += kThreads) mass[i] = 0.0f;

  // Key block kb into tile buffer `buf`: compressed column c holds keys kb * 128 + 8c .. + 7 side
  // by side (keys past the last query's position are zeros).
  auto load_keys = [&](int32_t kb, int buf) {
    constexpr int kChunks = D / 8;
    bf16* dst = ks + buf * C * W;
    for (int idx = tid; idx < kMassBlock * kChunks; idx += kThreads) {
      const int kk = idx / kChunks, ch = idx % kChunks;
      const int32_t key = kb * kMassBlock + kk;
      const bool valid = key < nk;
      const int32_t page = valid ? p.page_indices[it.page_base + key / p.page_size] : 0;
      const int64_t row =
          valid ? (static_cast<int64_t>(page) * p.n_pool + hs) * p.page_size + key % p.page_size
                : 0;
      cp_async_16(dst + tile_offset<C>(kk / S, (kk % S) * D + ch * 8), p.k + row * D + ch * 8,
                  valid);
    }
  };

  // This thread's two rows (lane / 4 and lane / 4 + 8 of its warp's 16): compressed row index
  // and whether it is present (its head exists, some query of its 8 is in the item).
  int32_t row_a[2];
  bool row_ok[2];
  for (int32_t g0 = 0; g0 < p.group; g0 += kMassWarps) {
    const bool head_ok = g0 + warp < p.group;
    for (int h = 0; h < 2; ++h) {
      row_a[h] = a_base + lane / 4 + 8 * h;
      row_ok[h] = head_ok && row_a[h] >= a_first && row_a[h] <= a_last;
    }
    // The compressed query rows of heads g0 .. g0 + 3: slot s of row a is position 8a + 7 - s.
    __syncthreads();  // the previous heads' tiles are no longer read
    for (int idx = tid; idx < kMassWarps * C * S * (D / 8); idx += kThreads) {
      const int ch = idx % (D / 8), s = (idx / (D / 8)) % S, j = (idx / (D / 8 * S)) % C;
      const int w = idx / (D / 8 * S * C);
      const int32_t pos = (a_base + j) * S + S - 1 - s;
      const bool valid = g0 + w < p.group && pos >= pos0 && pos <= pos1;
      const int64_t token = valid ? it.q_offset + (pos - it.start_pos) : 0;
      const int32_t head = it.kv_head * p.group + g0 + (valid ? w : 0);
      cp_async_16(qs + w * C * W + tile_offset<C>(j, s * D + ch * 8),
                  p.q + (token * p.n_heads + head) * D + ch * 8, valid);
    }
    cp_async_commit();

    // S = alpha Q K^T for this warp's 16 rows and the 16 columns of the tile in `buf`, masked
    // (a column after a row, or a row not present: -inf).
    auto scores = [&](int32_t kb, int buf, float(&sc)[2][4]) {
      const bf16* qw = qs + warp * C * W;
      const bf16* kt = ks + buf * C * W;
      for (int nt = 0; nt < 2; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll 8
      for (int kk = 0; kk < W / 16; ++kk) {
        uint32_t a[4], b[4];
        ldmatrix_x4(
            a, qw + tile_offset<C>((lane % 8) + 8 * ((lane / 8) % 2), kk * 16 + 8 * (lane / 16)));
        ldmatrix_x4(
            b, kt + tile_offset<C>((lane % 8) + 8 * (lane / 16), kk * 16 + 8 * ((lane / 8) % 2)));
        mma_16816(sc[0], a, b[0], b[1]);
        mma_16816(sc[1], a, b[2], b[3]);
      }
      for (int nt = 0; nt < 2; ++nt) {
        for (int e = 0; e < 4; ++e) {
          const int32_t col = kb * C + nt * 8 + 2 * (lane % 4) + e % 2;
          const int h = e / 2;
          sc[nt][e] = row_ok[h] && col <= row_a[h] ? sc[nt][e] * alpha : -INFINITY;
        }
      }
    };

    // Pass 1: each row's maximum and sum. Pass 2: each row's probabilities summed per block.
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    for (int pass = 0; pass < 2; ++pass) {
      load_keys(0, 0);
      cp_async_commit();
      for (int32_t kb = 0; kb < n_kb; ++kb) {
        if (kb + 1 < n_kb) load_keys(kb + 1, (kb + 1) % 2);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        float sc[2][4];
        scores(kb, kb % 2, sc);
        if (pass == 0) {
          for (int h = 0; h < 2; ++h) {
            float mx =
                fmaxf(fmaxf(sc[0][2 * h], sc[0][2 * h + 1]), fmaxf(sc[1][2 * h], sc[1][2 * h + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mnew = fmaxf(m[h], mx);
            const bool none = mnew == -INFINITY;  // nothing visible in this row yet
            float sum = 0.0f;
            for (int nt = 0; nt < 2 && !none; ++nt) {
              sum += expf(sc[nt][2 * h] - mnew) + expf(sc[nt][2 * h + 1] - mnew);
            }
            // Every lane shuffles (a quad shares its row, but other quads' rows may differ).
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            if (!none) {
              l[h] = l[h] * expf(m[h] - mnew) + sum;
              m[h] = mnew;
            }
          }
        } else {
          float share = 0.0f;
          for (int h = 0; h < 2; ++h) {
            if (l[h] == 0.0f) continue;
            const float inv = 1.0f / l[h];
            for (int nt = 0; nt < 2; ++nt) {
              share += (expf(sc[nt][2 * h] - m[h]) + expf(sc[nt][2 * h + 1] - m[h])) * inv;
            }
          }
          share = warp_sum(share);
          if (lane == 0 && share > 0.0f) atomicAdd(&mass[kb], share * inv_rows);
        }
        __syncthreads();  // tile kb % 2 is reloaded next iteration
      }
      cp_async_wait<0>();
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
  if (it.threshold >= 1.0) {  // dense: every block
    for (int32_t i = tid; i < n; i += kKeepThreads) kept[i] = i;
    if (tid == 0) p.count[blockIdx.x] = n;
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
    p.count[blockIdx.x] = c;
  }
}

constexpr int prefill_keep_smem(int max_blocks) {
  int n2 = 1;
  while (n2 < max_blocks) n2 *= 2;
  return n2 * 8;
}

}  // namespace lserve::cuda
