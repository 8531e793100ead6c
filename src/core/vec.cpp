#include "core/vec.h"

namespace lserve::vec {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSERVE_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
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

}  // namespace lserve::vec
