#include "backend/backend.h"

#include <cmath>

#include "core/error.h"

namespace lserve {

void Backend::scale(Tensor&, float) {
  fail("the {} backend cannot scale activations yet (Gemma 3 runs on the CPU and CUDA backends)",
       name());
}

void Backend::gelu_mul(const Tensor&, const Tensor&, Tensor&) {
  fail("the {} backend has no GeGLU yet (Gemma 3 runs on the CPU and CUDA backends)", name());
}

std::vector<float> rope_inverse_frequencies(const RopeParams& rope, int head_dim) {
  std::vector<float> inv(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    inv[i] = static_cast<float>(std::pow(static_cast<double>(rope.theta), -2.0 * i / head_dim));
    if (rope.freq_factors != nullptr) inv[i] /= rope.freq_factors[i];
  }
  return inv;
}

}  // namespace lserve
