// Small f32 vector kernels for the CPU backend's hot loops. Built for several x86 ISA levels and
// picked at run time (the binary targets baseline x86-64), with reductions vectorised explicitly
// because the compiler may not reorder a plain floating-point sum.
#pragma once

#include <cstdint>

namespace lserve::vec {

float dot(const float* a, const float* b, int64_t n);
// y += alpha * x
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace lserve::vec
