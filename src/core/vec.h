// Small f32 vector kernels for the CPU backend's hot loops. Built for several x86 ISA levels and
// picked at run time (the binary targets baseline x86-64), with reductions vectorised explicitly
// because the compiler may not reorder a plain floating-point sum.
#pragma once

#include <cstdint>

namespace lserve::vec {

float dot(const float* a, const float* b, int64_t n);
// y += alpha * x
void axpy(float alpha, const float* x, float* y, int64_t n);
// The largest element (-inf for n == 0).
float max(const float* x, int64_t n);
// x[i] = exp(x[i] - shift) for a softmax, returning the sum. Within 2e-7 relative of std::exp
// (a polynomial that vectorises, where libm's exp is a call per element); exp(-inf) is 0.
float exp_sum(float* x, int64_t n, float shift);
// x[i] *= a
void scale(float* x, int64_t n, float a);

}  // namespace lserve::vec
