// Parameters of the skinny GEMM (gemv.cuh): plain data the host fills and passes by value.
// Host-compilable (no device code).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace lserve::cuda {

constexpr int kGemvMaxTargets = 4;
constexpr int kGemvMaxTokens = 32;  // n <= 8 * NT with NT <= 4
constexpr int kGemvKBlock = 32;     // k per block: 8 bf16 (16 bytes) per lane of a quad

struct GemvTargetParams {
  const __nv_bfloat16* w;  // [rows, k] row-major
  void* out;               // [n, ld_out] bf16 or f32; out[t, o] at out + t * ld_out + o
  int64_t rows;
  int64_t ld_out;
};

// Targets share x and k. CTA c belongs to the first target i with c < cta_end[i] (inclusive
// prefix sums of ceil(rows / (16 * MT))).
struct GemvParams {
  const __nv_bfloat16* x;  // [n, ldx] row-major
  int64_t ldx;
  int64_t k;
  int32_t n;
  int32_t n_targets;
  int32_t accumulate;  // out = out + x W^T (one rounding) instead of out = x W^T
  int32_t cta_end[kGemvMaxTargets];
  GemvTargetParams t[kGemvMaxTargets];
};

}  // namespace lserve::cuda
