// KV cache element types: FP8 E4M3 rounding against the format's definition (every value,
// every midpoint, saturation), the per-(token, head) scaled rounding of a KV row, and a model
// run with rounded KV against the f32 reference.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "core/dtype.h"
#include "engine/offline.h"
#include "kv/kv_dtype.h"
#include "test_util.h"

namespace lserve {
namespace {

// The value of E4M3 code c (sign bit clear, c < 127: 127 is NaN).
float e4m3_value(int c) {
  const int e = (c >> 3) & 15, m = c & 7;
  return e == 0 ? std::ldexp(static_cast<float>(m), -9)
                : std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
}

TEST(KvDtype, Fp8KeepsEveryE4m3ValueAndRoundsMidpointsToEven) {
  EXPECT_EQ(e4m3_value(126), 448.0f);
  for (int c = 0; c < 127; ++c) {
    const float v = e4m3_value(c);
    ASSERT_EQ(round_to_e4m3(v), v) << "code " << c;
    ASSERT_EQ(round_to_e4m3(-v), -v) << "code " << c;
    if (c == 126) break;
    const float next = e4m3_value(c + 1);
    const float mid = (v + next) / 2;  // exact: both have few mantissa bits
    ASSERT_EQ(round_to_e4m3(mid), c % 2 == 0 ? v : next) << "between codes " << c << ", " << c + 1;
    ASSERT_EQ(round_to_e4m3(std::nextafter(mid, 0.0f)), v) << "just below the midpoint " << c;
    ASSERT_EQ(round_to_e4m3(std::nextafter(mid, 1e9f)), next) << "just above the midpoint " << c;
  }
}

TEST(KvDtype, Fp8SaturatesAndKeepsNan) {
  EXPECT_EQ(round_to_e4m3(449.0f), 448.0f);
  EXPECT_EQ(round_to_e4m3(1e30f), 448.0f);
  EXPECT_EQ(round_to_e4m3(std::numeric_limits<float>::infinity()), 448.0f);
  EXPECT_EQ(round_to_e4m3(-std::numeric_limits<float>::infinity()), -448.0f);
  EXPECT_TRUE(std::isnan(round_to_e4m3(std::nanf(""))));
  EXPECT_EQ(round_to_e4m3(std::ldexp(1.0f, -10)), 0.0f);  // halfway to 2^-9: to even, 0
  EXPECT_EQ(round_to_e4m3(std::ldexp(1.01f, -10)), std::ldexp(1.0f, -9));
  EXPECT_EQ(round_to_e4m3(1e-30f), 0.0f);
}

TEST(KvDtype, ScaledFp8RowErrorIsBoundedByTheRowMaximum) {
  std::mt19937_64 rng(test::test_seed());
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const int d = trial % 2 ? 128 : 61;
    const float scale = std::ldexp(1.0f, static_cast<int>(rng() % 40) - 20);
    std::vector<float> x(d), y(d);
    for (auto& v : x) v = dist(rng) * scale;
    if (trial % 7 == 0) x[rng() % d] *= 50.0f;  // an outlier channel
    float amax = 0;
    for (float v : x) amax = std::max(amax, std::fabs(v));
    round_kv_row(KvDtype::kFp8, x.data(), y.data(), d);
    const float s = amax / 448.0f;
    for (int i = 0; i < d; ++i) {
      // Half a quantum: 2^-4 of the value in normal binades, 2^-10 s below them.
      ASSERT_LE(std::fabs(y[i] - x[i]), std::fabs(x[i]) / 16 + s / 1024 + 1e-6f * amax)
          << "trial " << trial << " element " << i;
    }
  }
  std::vector<float> zero(16, 0.0f), out(16, 1.0f);
  round_kv_row(KvDtype::kFp8, zero.data(), out.data(), 16);
  for (float v : out) EXPECT_EQ(v, 0.0f);
  std::vector<float> b = {1.0f + 1e-3f, -3.14159f};
  round_kv_row(KvDtype::kBf16, b.data(), b.data(), 2);
  EXPECT_EQ(b[0], bf16_to_f32(f32_to_bf16(1.0f + 1e-3f)));
  EXPECT_EQ(b[1], bf16_to_f32(f32_to_bf16(-3.14159f)));
}

TEST(KvDtype, RowBytesCountTheElementsAndTheFp8Scale) {
  EXPECT_EQ(kv_row_bytes(DType::BF16, DType::BF16, 128).kv, 256);
  EXPECT_EQ(kv_row_bytes(DType::F32, DType::F32, 64).kv, 256);
  // E4M3 bytes plus the row's f32 scale; the bounds stay in the compute dtype.
  const KvRowBytes f8 = kv_row_bytes(DType::F8E4M3, DType::BF16, 128);
  EXPECT_EQ(f8.kv, 132);
  EXPECT_EQ(f8.stats, 256);
}

TEST(KvDtype, ModelWithRoundedKvStaysCloseToTheF32Reference) {
  CpuBackend be(2);
  const ModelConfig c = test::small_llama_config(2, 64);
  auto model = test::random_llama(be, c, test::test_seed());
  std::mt19937_64 rng(test::test_seed() + 1);
  std::vector<int32_t> tokens(150);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  auto run = [&](KvDtype t) {
    OfflineRunOptions o;
    o.chunk = 37;
    o.kv_dtype = t;
    return sequence_logits(*model, be, tokens, o);
  };
  const auto ref = run(KvDtype::kAuto), bf = run(KvDtype::kBf16), f8 = run(KvDtype::kFp8);
  auto rel = [&](const std::vector<float>& a) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      num += (a[i] - ref[i]) * (a[i] - ref[i]);
      den += ref[i] * ref[i];
    }
    return std::sqrt(num / den);
  };
  const double e_bf = rel(bf), e_f8 = rel(f8);
  // The rounding happens (errors are not 0), is small, and fp8 (3 mantissa bits) loses more
  // than bf16 (7 bits).
  EXPECT_GT(e_bf, 0.0);
  EXPECT_LT(e_bf, 0.01);
  EXPECT_GT(e_f8, e_bf);
  EXPECT_LT(e_f8, 0.08);
  std::printf("[ info     ] logits rel. L2 error vs f32 KV: bf16 %.2e, fp8 %.2e\n", e_bf, e_f8);
}

}  // namespace
}  // namespace lserve
