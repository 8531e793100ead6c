#include "core/vec.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace lserve::vec {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSERVE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSERVE_CLONES
#endif

LSERVE_CLONES float dot(const float* a, const float* b, int64_t n) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

LSERVE_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

LSERVE_CLONES float max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

namespace {

using v8f = float __attribute__((vector_size(32)));
using v8i = int32_t __attribute__((vector_size(32)));

// exp(y) = 2^k * exp(r) with k = round(y / ln 2) and |r| <= ln2 / 2, exp(r) by its Taylor
// polynomial to degree 7 (truncation below 1e-8 relative); ln 2 split in two so r is exact.
// Written with vector types because the compiler does not vectorise the scalar form (the bit
// cast and the selects stop it). Below -87 the result would be under the smallest normal float:
// it is a softmax weight of zero.
// In place, by reference: vectors passed by value would depend on the clone's ABI.
inline void exp8(v8f& y) {
  const v8f lo = v8f{} - 87.0f, hi = v8f{} + 88.0f;
  v8f yc = y < lo ? lo : y;
  yc = yc > hi ? hi : yc;
  // Round to nearest by adding and removing 1.5 * 2^23.
  const v8f k = (yc * 1.44269504f + 12582912.0f) - 12582912.0f;
  const v8f r = (yc - k * 0.693145752f) - k * 1.42860677e-6f;
  v8f p = v8f{} + 1.98412698e-4f;
  p = p * r + 1.38888889e-3f;
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const v8i bits = (__builtin_convertvector(k, v8i) + 127) << 23;
  const v8f e = p * (v8f)bits;  // NOLINT(google-readability-casting): a vector bit cast
  y = y < lo ? v8f{} : e;
}

}  // namespace

LSERVE_CLONES float exp_sum(float* x, int64_t n, float shift) {
  v8f acc{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f y;
    std::memcpy(&y, x + i, sizeof(y));
    y -= shift;
    exp8(y);
    std::memcpy(x + i, &y, sizeof(y));
    acc += y;
  }
  if (i < n) {
    // The tail padded with -inf, whose exponentials are zero.
    v8f y = v8f{} - std::numeric_limits<float>::infinity();
    std::memcpy(&y, x + i, (n - i) * sizeof(float));
    y -= shift;
    exp8(y);
    std::memcpy(x + i, &y, (n - i) * sizeof(float));
    acc += y;
  }
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) sum += acc[j];
  return sum;
}

LSERVE_CLONES void scale(float* x, int64_t n, float a) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

}  // namespace lserve::vec
