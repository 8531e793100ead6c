// The CPU backend's vector kernels against plain scalar loops, on fresh random inputs of odd sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/vec.h"

namespace lserve {
namespace {

TEST(Vec, ExpSumMatchesLibmExp) {
  std::mt19937 rng(std::random_device{}());
  for (int n : {1, 7, 63, 1000, 4097}) {
    std::uniform_real_distribution<float> dist(-100.0f, 20.0f);
    std::vector<float> x(n);
    for (float& v : x) v = dist(rng);
    if (n > 1) x[n / 2] = -std::numeric_limits<float>::infinity();  // a masked score
    const float shift = vec::max(x.data(), n);
    float m = -std::numeric_limits<float>::infinity();
    for (float v : x) m = std::max(m, v);
    ASSERT_EQ(shift, m);
    std::vector<float> y = x;
    const float sum = vec::exp_sum(y.data(), n, shift);
    double ref_sum = 0;
    for (int i = 0; i < n; ++i) {
      // The reference takes the same rounded difference: the error measured is the exponential's.
      const float diff = x[i] - shift;
      const double ref = std::exp(static_cast<double>(diff));
      ref_sum += ref;
      if (diff < -87.0f) {
        EXPECT_EQ(y[i], 0.0f) << "x = " << x[i];
      } else {
        EXPECT_NEAR(y[i], ref, 3e-7 * ref) << "x = " << x[i] << ", shift " << shift;
      }
    }
    EXPECT_NEAR(sum, ref_sum, 1e-5 * ref_sum);
    vec::scale(y.data(), n, 1.0f / sum);
    double total = 0;
    for (float v : y) total += v;
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST(Vec, ExpSumOverTheWholeRange) {
  // Every exponent the softmax can see, at a fine step: the worst relative error stays small.
  std::vector<float> x;
  for (float v = -87.0f; v <= 0.0f; v += 0.001f) x.push_back(v);
  std::vector<float> y = x;
  vec::exp_sum(y.data(), static_cast<int64_t>(y.size()), 0.0f);
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = std::exp(static_cast<double>(x[i]));
    worst = std::max(worst, std::abs(y[i] - ref) / ref);
  }
  EXPECT_LT(worst, 3e-7);
}

}  // namespace
}  // namespace lserve
