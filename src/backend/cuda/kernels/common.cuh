// Small device helpers shared by the kernels: bf16 conversion, vector access, warp reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/kernels/params.h"

namespace lserve::cuda {

// 2^x on the special-function unit (about 2 ulp; flushes denormals, and 2^-inf = +0): softmax
// exponents need no more, and exp2f's range handling costs instructions in the inner loop.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ bf16 to_bf16(float x) { return __float2bfloat16_rn(x); }

// FP8 E4M3 KV elements (kv/kv_dtype.h): round to nearest even, saturating at +-448 as the CPU's
// round_to_e4m3 does. Every E4M3 value is exact in f16, f32 and bf16.
__device__ __forceinline__ uint8_t f32_to_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float e4m3_to_f32(uint8_t b) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(b, __NV_E4M3)));
}
// Two E4M3 elements (the first in the low byte) as a bf16 pair (the first in the low half).
__device__ __forceinline__ uint32_t e4m3x2_to_bf16x2(uint32_t two) {
  const float2 f = __half22float2(
      __half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3)));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  return *reinterpret_cast<const uint32_t*>(&b);
}
// Two E4M3 elements (the first in the low byte) as an f16 pair: one conversion instruction.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t two) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
}
// The element `i` of a KV row base, as f32 before the row's scale (bf16 or E4M3 storage).
__device__ __forceinline__ float kv_element(const void* base, int64_t i, bool fp8) {
  return fp8 ? e4m3_to_f32(static_cast<const uint8_t*>(base)[i])
             : __bfloat162float(static_cast<const bf16*>(base)[i]);
}

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_f32<bf16>(float x) {
  return to_bf16(x);
}

struct SumOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
  static constexpr float kIdentity = 0.0f;
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
  static constexpr float kIdentity = -INFINITY;
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op = {}) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp{}); }

// Reduction over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op = {}) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : Op::kIdentity;
  return warp_reduce(v, op);
}

// Programmatic dependent launch (sm_90; no-ops before, and when launched without the attribute).
// A kernel launched with programmatic stream serialization may start while the kernel before it
// still runs: it must call griddep_wait() in every CTA (also those with nothing to do, so that
// its completion still implies its predecessor's) before it touches anything an earlier kernel
// wrote. griddep_launch_dependents() lets the next kernel's CTAs be scheduled early.
__device__ __forceinline__ void griddep_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Order-preserving map of floats to unsigned ints (for radix-style selection).
__device__ __forceinline__ uint32_t float_order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

}  // namespace lserve::cuda
