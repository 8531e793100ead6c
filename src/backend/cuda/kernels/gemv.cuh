// Skinny GEMM for decode, bound by the weight read: out[t, o] (+)= sum_k x[t, k] * W[o, k] for
// n <= 32 token rows. Shapes: W [rows, k] bf16 row-major; x [n, ldx] bf16; out [n, ld_out] bf16
// or f32; f32 accumulation on tensor cores (mma.sync m16n8k16, W as the A operand: 16 output rows
// per m-tile; x as B: 8 tokens per n-tile).
//
// No shared memory for W: the order of k inside a dot product is free, so each 16-k MMA takes a
// permuted set of k. In the m16n8k16 fragments lane (g = lane / 4, t = lane % 4) holds logical k
// {2t, 2t+1, 2t+8, 2t+9} of A rows g and g+8 (regs a0/a2 and a1/a3) and of B column g (b0, b1).
// Over a 32-k block at kb, lane (g, t) loads the 16 bytes W[o0+g][kb+8t, kb+8t+8) (and row g+8)
// and x[g][same]; the first MMA maps those logical k to physical kb+8t+{0,1,2,3}, the second to
// kb+8t+{4,5,6,7}. The map is the same bijection of k for A and B, so every product W[o][k] x[k]
// meets exactly once, and each lane's loads come straight from global memory, 16 bytes wide.
//
// Policy parameters: NT n-tiles (n <= 8 NT); MT m-tiles per warp (each x fragment feeds MT of
// them, so x, re-read from L2 by every CTA, costs n / (16 MT) of the weight bytes); WARPS warps per
// CTA split the k blocks of the CTA's 16 MT rows, interleaved (block j * WARPS + w goes to warp w)
// so the warps read adjacent 64-byte pieces of each row at once; UNROLL blocks per warp have their
// loads in flight before their MMAs. The warps' partial tiles are summed in shared memory in a
// fixed order (deterministic), and the epilogue writes the CTA's [n, 16 MT] piece of out. Up to
// four targets (W, out) share x and k in one launch.
//
// Stages: load_w, load_x, mma_block, reduce_warps, epilogue.
#pragma once

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/gemv_params.h"
#include "backend/cuda/kernels/mma.cuh"

namespace lserve::cuda {
namespace gemv {

// Weights are read once per call: keep them out of L1, and let L2 fetch whole 256-byte pieces
// (the CTA's other warps want the rest of each piece at the same time).
__device__ __forceinline__ uint4 load_weights_16(const bf16* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// x may have been written by the kernel before (read only after griddep_wait), so a plain
// coherent load. volatile keeps all loads of a group ahead of its MMAs (also volatile).
__device__ __forceinline__ uint4 load_act_16(const bf16* p) {
  uint4 v;
  asm volatile("ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// The u-th block of a group lies u * WARPS blocks past the group's first one.
template <int WARPS>
constexpr int kBlockStride = WARPS* kGemvKBlock;  // elements

// Stage load_w: the first `cnt` blocks of a group; w[u][mt][h] = W[row (mt, g + 8h)][8 k].
template <int MT, int WARPS, int UNROLL>
__device__ __forceinline__ void load_w(uint4 (&w)[UNROLL][MT][2], const bf16* const (&wp)[MT][2],
                                       int cnt) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    if (u < cnt) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          w[u][mt][h] = load_weights_16(wp[mt][h] + u * kBlockStride<WARPS>);
        }
      }
    }
  }
}

// Stage load_x: xv[u][nt] = x[token (nt, g)][8 k] of the same blocks.
template <int NT, int WARPS, int UNROLL>
__device__ __forceinline__ void load_x(uint4 (&xv)[UNROLL][NT], const bf16* const (&xp)[NT],
                                       int cnt) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    if (u < cnt) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) xv[u][nt] = load_act_16(xp[nt] + u * kBlockStride<WARPS>);
    }
  }
}

// Stage mma_block: two MMAs per (block, m-tile, n-tile), over 16-byte vector halves .x.y, .z.w.
template <int NT, int MT, int UNROLL>
__device__ __forceinline__ void mma_block(float (&acc)[MT][NT][4], const uint4 (&w)[UNROLL][MT][2],
                                          const uint4 (&xv)[UNROLL][NT], int cnt) {
#pragma unroll
  for (int u = 0; u < UNROLL; ++u) {
    if (u < cnt) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = w[u][mt][0], hi = w[u][mt][1];
        const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};
        const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          mma_16816(acc[mt][nt], a0, xv[u][nt].x, xv[u][nt].y);
          mma_16816(acc[mt][nt], a1, xv[u][nt].z, xv[u][nt].w);
        }
      }
    }
  }
}

// Partial tiles of all warps, [WARPS][8 NT tokens][16 MT rows + 4]: the padding puts the four
// token columns a fragment register spans (2t apart) on different banks.
template <int NT, int MT, int WARPS>
struct ReduceSmem {
  static constexpr int kStride = 16 * MT + 4;
  float v[WARPS][8 * NT][kStride];
};

// Stage reduce_warps: C fragment (mt, nt, r) of lane (g, t) is row mt*16 + g + 8 (r / 2), token
// nt*8 + 2t + r % 2.
template <int NT, int MT, int WARPS>
__device__ __forceinline__ void reduce_warps(ReduceSmem<NT, MT, WARPS>& s,
                                             const float (&acc)[MT][NT][4], int warp, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        s.v[warp][nt * 8 + 2 * t + r % 2][mt * 16 + g + 8 * (r / 2)] = acc[mt][nt][r];
      }
    }
  }
  __syncthreads();
}

// Stage epilogue: the n x (16 MT) piece, consecutive threads on consecutive output columns; the
// warps' partials summed in warp order so results do not depend on timing.
template <int NT, int MT, int WARPS, typename OutT>
__device__ __forceinline__ void epilogue(const ReduceSmem<NT, MT, WARPS>& s, OutT* out,
                                         int64_t ld_out, int64_t o0, int64_t rows, int n,
                                         bool accumulate) {
  constexpr int kRows = 16 * MT;
  for (int e = threadIdx.x; e < n * kRows; e += 32 * WARPS) {
    const int token = e / kRows, r = e % kRows;
    if (o0 + r >= rows) continue;
    float sum = s.v[0][token][r];
#pragma unroll
    for (int w = 1; w < WARPS; ++w) sum += s.v[w][token][r];
    OutT* dst = out + token * ld_out + o0 + r;
    if (accumulate) sum += to_f32(*dst);
    *dst = from_f32<OutT>(sum);
  }
}

}  // namespace gemv

// Grid: sum over targets of ceil(rows / (16 MT)) CTAs of 32 WARPS threads; CTA c computes rows
// [o0, o0 + 16 MT) of its target for all n tokens over the whole k. Requires n <= 8 NT,
// k % 32 == 0, 16-byte aligned rows of x and W.
template <int NT, int MT, int WARPS, int UNROLL, typename OutT>
__global__ void __launch_bounds__(32 * WARPS) gemv_kernel(const GemvParams p) {
  using namespace gemv;
  static_assert(NT >= 1 && NT * 8 <= kGemvMaxTokens && (MT == 1 || MT == 2) && UNROLL >= 1);
  static_assert(sizeof(ReduceSmem<NT, MT, WARPS>) <= 48 * 1024, "static shared memory limit");
  __shared__ ReduceSmem<NT, MT, WARPS> red;

  // The first block of the launch may start while the kernel before it is still running (PDL):
  // let the next kernel start early too; it waits on this one's completion before reading.
  griddep_launch_dependents();

  // This CTA's target, by static indices (a dynamic index would copy the params to local memory).
  const int cta = static_cast<int>(blockIdx.x);
  GemvTargetParams tg = p.t[0];
  int first_cta = 0;
#pragma unroll
  for (int i = 1; i < kGemvMaxTargets; ++i) {
    if (i < p.n_targets && cta >= p.cta_end[i - 1]) {
      tg = p.t[i];
      first_cta = p.cta_end[i - 1];
    }
  }
  const int64_t o0 = static_cast<int64_t>(cta - first_cta) * (16 * MT);

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int g = lane / 4, t = lane % 4;
  const int n_blocks = static_cast<int>(p.k / kGemvKBlock);
  const int my_blocks = warp < n_blocks ? (n_blocks - 1 - warp) / WARPS + 1 : 0;
  const int64_t first_k = static_cast<int64_t>(warp) * kGemvKBlock + 8 * t;

  // Rows past the target's end and tokens past n read a valid row instead (the last one): A row
  // g only reaches C row g, and B column g only C column g, so they only feed outputs that are
  // never stored, and the loop needs no predicates. (A clamped token's load coalesces with the
  // real one's.)
  const bf16* wp[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = min(o0 + mt * 16 + g + 8 * h, tg.rows - 1);
      wp[mt][h] = tg.w + row * p.k + first_k;
    }
  }
  const bf16* xp[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) xp[nt] = p.x + min(nt * 8 + g, p.n - 1) * p.ldx + first_k;

  constexpr int kGroupStride = UNROLL * kBlockStride<WARPS>;
  uint4 w[UNROLL][MT][2];
  uint4 xv[UNROLL][NT];
  float acc[MT][NT][4] = {};

  // Weights are never written by earlier kernels: the first group's weight loads go out before
  // waiting for them; x and out are touched only after. ptxas may legally sink loads below the
  // wait (seen: it scheduled the wait first), which would queue the weight fetch behind the
  // previous kernel; a branch between them keeps the order (n >= 1: the wait always runs).
  int cnt = min(UNROLL, my_blocks);
  load_w<MT, WARPS, UNROLL>(w, wp, cnt);
  if (p.n > 0) griddep_wait();
  for (int j = 0; j < my_blocks; j += UNROLL) {
    load_x<NT, WARPS, UNROLL>(xv, xp, cnt);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) xp[nt] += kGroupStride;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      wp[mt][0] += kGroupStride;
      wp[mt][1] += kGroupStride;
    }
    mma_block<NT, MT, UNROLL>(acc, w, xv, cnt);
    cnt = min(UNROLL, my_blocks - j - UNROLL);
    load_w<MT, WARPS, UNROLL>(w, wp, cnt);
  }

  reduce_warps<NT, MT, WARPS>(red, acc, warp, lane);
  epilogue<NT, MT, WARPS, OutT>(red, static_cast<OutT*>(tg.out), tg.ld_out, o0, tg.rows, p.n,
                                p.accumulate != 0);
}

}  // namespace lserve::cuda
