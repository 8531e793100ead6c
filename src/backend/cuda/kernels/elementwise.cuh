// Element-wise and row-wise model ops. Shapes: x, out [rows, cols] row-major; weights [1, cols].
#pragma once

#include "backend/cuda/kernels/common.cuh"

namespace lserve::cuda {

// Every kernel here may be launched with programmatic dependent launch (common.cuh): each CTA
// waits for the kernel before it before reading, and loads only weights before that.

// out[r] = x[rows[r]] (also the embedding lookup: rows are token ids into the table)
template <typename T>
__global__ void gather_rows_kernel(const T* __restrict__ x, const int32_t* __restrict__ rows,
                                   int64_t cols, T* __restrict__ out) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t r = blockIdx.x;
  const T* src = x + static_cast<int64_t>(rows[r]) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * cols + c] = src[c];
}

// One block per row: out = x * rsqrt(mean(x^2) + eps) * w, statistics in f32. In place is fine:
// each thread reads its elements before the reduction and writes after it. Any cols.
template <typename T>
__global__ void rms_norm_kernel(const T* x, const T* __restrict__ w, float eps, int64_t cols,
                                T* out) {
  griddep_wait();
  griddep_launch_dependents();
  const int64_t r = blockIdx.x;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = to_f32(x[r * cols + c]);
    ss += v * v;
  }
  const float inv = rsqrtf(block_reduce(ss, SumOp{}) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    out[r * cols + c] = from_f32<T>(to_f32(x[r * cols + c]) * inv * to_f32(w[c]));
  }
}

// The same for bf16 rows of cols % 8 == 0, cols <= 8 * CHUNKS * blockDim.x, 16-byte aligned:
// each thread keeps its CHUNKS 8-element pieces of x and w in registers, so the row is read once
// with every load in flight together (the loop above waits for each load in turn: ~14 us for
// a 4096-wide row, against ~3 us here). w is read before waiting for x's writer.
template <int CHUNKS>
__global__ void rms_norm_vec_kernel(const bf16* x, const bf16* __restrict__ w, float eps,
                                    int64_t cols, bf16* out) {
  const int64_t r = blockIdx.x;
  const int n_chunks = static_cast<int>(cols / 8);
  uint4 wv[CHUNKS], xv[CHUNKS];
#pragma unroll
  for (int i = 0; i < CHUNKS; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c < n_chunks) wv[i] = *reinterpret_cast<const uint4*>(w + 8 * c);
  }
  griddep_wait();
  griddep_launch_dependents();
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < CHUNKS; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c >= n_chunks) continue;
    xv[i] = *reinterpret_cast<const uint4*>(x + r * cols + 8 * c);
  }
#pragma unroll
  for (int i = 0; i < CHUNKS; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c >= n_chunks) continue;
    const auto* xe = reinterpret_cast<const bf16*>(&xv[i]);
#pragma unroll
    for (int e = 0; e < 8; ++e) ss += to_f32(xe[e]) * to_f32(xe[e]);
  }
  const float inv = rsqrtf(block_reduce(ss, SumOp{}) / static_cast<float>(cols) + eps);
#pragma unroll
  for (int i = 0; i < CHUNKS; ++i) {
    const int c = threadIdx.x + i * blockDim.x;
    if (c >= n_chunks) continue;
    const auto* xe = reinterpret_cast<const bf16*>(&xv[i]);
    const auto* we = reinterpret_cast<const bf16*>(&wv[i]);
    uint4 ov;
    auto* oe = reinterpret_cast<bf16*>(&ov);
#pragma unroll
    for (int e = 0; e < 8; ++e) oe[e] = to_bf16(to_f32(xe[e]) * inv * to_f32(we[e]));
    *reinterpret_cast<uint4*>(out + r * cols + 8 * c) = ov;
  }
}

template <typename T>
__global__ void add_kernel(T* x, const T* __restrict__ y, int64_t n) {
  griddep_wait();
  griddep_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = from_f32<T>(to_f32(x[i]) + to_f32(y[i]));
  }
}

template <typename T>
__global__ void add_bias_kernel(T* x, const T* __restrict__ bias, int64_t n, int64_t cols) {
  griddep_wait();
  griddep_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = from_f32<T>(to_f32(x[i]) + to_f32(bias[i % cols]));
  }
}

template <typename T>
__global__ void silu_mul_kernel(const T* gate, const T* __restrict__ up, T* out, int64_t n) {
  griddep_wait();
  griddep_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.0f + __expf(-g)) * to_f32(up[i]));
  }
}

// gelu(g) * up with gelu's tanh approximation (Gemma's GeGLU), as the CPU computes it:
// g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))). tanhf, not a fast approximation: the CPU
// reference uses std::tanh.
template <typename T>
__global__ void gelu_mul_kernel(const T* gate, const T* __restrict__ up, T* out, int64_t n) {
  griddep_wait();
  griddep_launch_dependents();
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float g = to_f32(gate[i]);
    const float t = tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g));
    out[i] = from_f32<T>(0.5f * g * (1.0f + t) * to_f32(up[i]));
  }
}

// x *= s (Gemma's embedding scale), in f32 and rounded once.
template <typename T>
__global__ void scale_kernel(T* x, float s, int64_t n) {
  griddep_wait();
  griddep_launch_dependents();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = from_f32<T>(to_f32(x[i]) * s);
  }
}

template <typename T>
__global__ void fill_kernel(T* x, float value, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = from_f32<T>(value);
  }
}

// Uniform(-scale, scale) from a counter-based hash of (seed, index): the same values on every
// run and device, no generator state.
__device__ __forceinline__ uint32_t hash_u32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}

__global__ void random_bf16_kernel(bf16* x, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float u = (hash_u32(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i)) >> 8) *
                    (1.0f / 16777216.0f);
    x[i] = to_bf16((2.0f * u - 1.0f) * scale);
  }
}

// E4M3 elements of uniform(-448, 448) noise (synthetic fp8 KV: the row scales set the magnitude).
__global__ void random_e4m3_kernel(uint8_t* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const float u = (hash_u32(seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(i)) >> 8) *
                    (1.0f / 16777216.0f);
    x[i] = f32_to_e4m3((2.0f * u - 1.0f) * 448.0f);
  }
}

}  // namespace lserve::cuda
