// Hopper warpgroup MMA (wgmma, sm_90a) primitives for the attention kernel's prefill tiles.
// A warpgroup (4 warps) multiplies a 64-row A operand by a B operand read straight from shared
// memory through a matrix descriptor; accumulators come back in the m16n8 C-fragment layout per
// warp (warp w of the group holds rows 16w..16w+15), so the softmax code is the mma.sync one.
//
// Shared-memory tiles use the 128-byte swizzle (tile_offset below): a tile of R rows x C columns
// is stored as C/64 blocks of R rows x 128 bytes, the 16-byte chunk index XORed with row % 8.
// The same layout serves ldmatrix (conflict-free) and wgmma descriptors, both K-major (Q, K: rows
// are M/N, columns are K) and MN-major (V: rows are K, columns are N).
#pragma once

#include <cstdint>

#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/params.h"

namespace lserve::cuda {

// Element offset of (row, col) in an R-row tile stored as 64-column, 128-byte-swizzled blocks.
// Tiles must start on a 1024-byte boundary: the hardware swizzle XORs address bits [4:6] with
// bits [7:9].
template <int R>
__device__ __forceinline__ int tile_offset(int row, int col) {
  return (col / 64) * R * 64 + row * 64 + ((((col / 8) % 8) ^ (row % 8)) * 8) + col % 8;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LSERVE_WGMMA 1

// Matrix descriptor (PTX ISA "Matrix Descriptor Format"): start address, leading and stride byte
// offsets (all in 16-byte units), 128-byte swizzle (mode 1 in bits 62-63).
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t smem_byte_addr, uint32_t lbo_bytes,
                                               uint32_t sbo_bytes) {
  return static_cast<uint64_t>((smem_byte_addr >> 4) & 0x3FFF) |
         static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16 |
         static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32 | 1ull << 62;
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}

// d (+)= A(64x16, K-major smem) * B(16x64, K-major smem); scale_d 0 overwrites d.
__device__ __forceinline__ void wgmma_ss_m64n64k16(float (&d)[8][4], uint64_t a, uint64_t b,
                                                   int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "l"(a), "l"(b), "r"(scale_d));
}

__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[16][4], uint64_t a, uint64_t b,
                                                    int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "
      "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, "
      "%36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, "
      "%53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63} "
      ", %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),
        "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),
        "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),
        "+f"(d[15][2]), "+f"(d[15][3])
      : "l"(a), "l"(b), "r"(scale_d));
}

// d += A(64x16 registers, per warp the m16n8k16 A fragment) * B(16xN, MN-major smem).
__device__ __forceinline__ void wgmma_rs_m64n64k16_mn(float (&d)[8][4], const uint32_t (&a)[4],
                                                      uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

__device__ __forceinline__ void wgmma_rs_m64n128k16_mn(float (&d)[16][4], const uint32_t (&a)[4],
                                                       uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, "
      "%9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, "
      "%27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, "
      "%45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, "
      "%63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),
        "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),
        "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),
        "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),
        "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),
        "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]),
        "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]),
        "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]),
        "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]),
        "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]),
        "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]),
        "+f"(d[15][2]), "+f"(d[15][3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Shared-memory writes of this thread (cp.async, st.shared) become visible to the async proxy
// that wgmma reads through; each writer runs it before the barrier that publishes the tile.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef LSERVE_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Waits until at most N of this warpgroup's committed wgmma groups are still running (groups
// complete in order).
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef LSERVE_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Keeps the compiler from moving reads or writes of accumulator registers across an asynchronous
// wgmma that owns them (between issue and wait).
template <int N>
__device__ __forceinline__ void wgmma_fence_operand(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
  }
}

// Keeps the compiler from reusing the registers of an A operand that an issued wgmma still
// reads: called after the issue and again after the wait that retires it.
template <int N>
__device__ __forceinline__ void wgmma_fence_operand(uint32_t (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(a[i][e])::"memory");
  }
}

// Issues S (64 rows x KT keys, this warpgroup's rows) = Q K^T as one committed group (S +=
// Q K^T with `accumulate`). q: the BM-row query tile, k: a KT-key tile, both [D/64][rows][64]
// swizzled; wg: the warpgroup (its rows are 64 * wg ..). S is valid after wgmma_wait and
// wgmma_fence_operand(s). kFence = false leaves out the operand fence, for a group that adds to
// an S that earlier groups still own (the compiler would otherwise wait for them first).
template <int D, int BM, int KT, bool kFence = true>
__device__ __forceinline__ void wgmma_qk_issue(float (&s)[KT / 8][4], const bf16* q, const bf16* k,
                                               int wg, bool accumulate = false) {
  static_assert(KT == 64 || KT == 128, "key tiles of 64 or 128 keys");
#ifdef LSERVE_WGMMA
  const uint32_t qa = smem_addr(q) + wg * 64 * 128, ka = smem_addr(k);
  if constexpr (kFence) wgmma_fence_operand(s);
  wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    // 16 columns are 32 bytes into a 128-byte row; every 64 columns start the next block.
    const uint32_t q_off = (kk / 4) * BM * 128 + (kk % 4) * 32;
    const uint32_t k_off = (kk / 4) * KT * 128 + (kk % 4) * 32;
    const uint64_t a = wgmma_desc(qa + q_off, 16, 1024), b = wgmma_desc(ka + k_off, 16, 1024);
    if constexpr (KT == 128) {
      wgmma_ss_m64n128k16(s, a, b, accumulate || kk > 0);
    } else {
      wgmma_ss_m64n64k16(s, a, b, accumulate || kk > 0);
    }
  }
  wgmma_commit();
#else
  __trap();  // the host launches wgmma tiles only on sm_90 devices
#endif
}

// The probabilities of a KT-key tile (score layout) as bf16 A fragments, 16 keys each.
template <int KT>
__device__ __forceinline__ void pack_probs(const float (&p)[KT / 8][4], uint32_t (&a)[KT / 16][4]) {
#pragma unroll
  for (int c = 0; c < KT / 16; ++c) {
    a[c][0] = pack_bf16(p[2 * c][0], p[2 * c][1]);
    a[c][1] = pack_bf16(p[2 * c][2], p[2 * c][3]);
    a[c][2] = pack_bf16(p[2 * c + 1][0], p[2 * c + 1][1]);
    a[c][3] = pack_bf16(p[2 * c + 1][2], p[2 * c + 1][3]);
  }
}

// Issues O (64 x D) += P V as one committed group: a holds P's A fragments (pack_probs); v is a
// KT-key tile [D/64][KT][64] swizzled, read MN-major. Until the group is retired neither o nor a
// may be touched (wgmma_fence_operand on both after the wait).
template <int D, int KT>
__device__ __forceinline__ void wgmma_pv_issue(float (&o)[D / 8][4], uint32_t (&a)[KT / 16][4],
                                               const bf16* v) {
#ifdef LSERVE_WGMMA
  const uint32_t va = smem_addr(v);
  wgmma_fence_operand(o);
  wgmma_fence();
#pragma unroll
  for (int c = 0; c < KT / 16; ++c) {
    // K (keys) advances 16 rows of 128 bytes; LBO steps to the next 64 columns (N), SBO to the
    // next 8 keys (K).
    const uint64_t b = wgmma_desc(va + c * 16 * 128, KT * 128, 1024);
    if constexpr (D == 128) {
      wgmma_rs_m64n128k16_mn(o, a[c], b);
    } else {
      wgmma_rs_m64n64k16_mn(o, a[c], b);
    }
  }
  wgmma_commit();
  wgmma_fence_operand(a);
#else
  __trap();
#endif
}

// Warp specialisation (sm_90a): a warpgroup gives registers back to the pool or takes them from
// it; N is a multiple of 8 in [24, 256], and all warps of the group execute it.
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
#ifdef LSERVE_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
#ifdef LSERVE_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// Tensor memory access (TMA, sm_90): the calling thread adds `bytes` to the transactions that
// the current phase of `bar` waits for (no arrival; the copies' completions count them down).
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef LSERVE_WGMMA
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
#endif
}

// Copies the box of `map` (a 2D tensor map, encoded on the host) at element coordinates
// (col, row) into shared memory at dst, in the map's swizzle; its bytes complete on `bar`.
// `map` must be a kernel parameter (__grid_constant__) or in constant or global memory.
__device__ __forceinline__ void tma_load_2d(void* dst, const void* map, int32_t col, int32_t row,
                                            uint64_t* bar) {
#ifdef LSERVE_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(row), "r"(smem_addr(bar))
      : "memory");
#endif
}

// S = Q K^T for a 64-key tile, waited for (the two-warpgroup tiles of attention.cuh).
template <int D, int BM>
__device__ __forceinline__ void wgmma_qk(float (&s)[8][4], const bf16* q, const bf16* k, int wg) {
  wgmma_qk_issue<D, BM, kKeyTile>(s, q, k, wg);
  wgmma_wait<0>();
  wgmma_fence_operand(s);
}

// O += P V for a 64-key tile of probabilities p (score layout), waited for.
template <int D>
__device__ __forceinline__ void wgmma_pv(float (&o)[D / 8][4], const float (&p)[8][4],
                                         const bf16* v) {
  uint32_t a[4][4];
  pack_probs<kKeyTile>(p, a);
  wgmma_pv_issue<D, kKeyTile>(o, a, v);
  wgmma_wait<0>();
  wgmma_fence_operand(o);
  wgmma_fence_operand(a);
}

}  // namespace lserve::cuda
