// The default model against llama.cpp (fixture recorded by scripts/make-golden.py): identical
// tokenization, and logits that agree within what llama.cpp's quantized arithmetic explains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "model_test_util.h"

namespace lserve {
namespace {

nlohmann::json load_golden() { return test::load_golden("golden_smollm2.json"); }

TEST(GoldenModel, TokenizationMatchesLlamaCpp) {
  auto& m = test::default_model();
  EXPECT_GE(test::expect_golden_tokens(*m.tokenizer, load_golden(), /*round_trip=*/true), 30);
}

// Two references for the same logits:
// - exact: a float64 NumPy forward (scripts/reference_forward.py). lserve computes in f32, so the
//   logits (magnitude ~30) must agree to ~1e-5 relative; 5e-4 absolute leaves room for f32
//   summation order only.
// - llama.cpp: it multiplies Q4_1 weights by activations quantized to 8 bits per block of 32 and
//   keeps the KV cache in f16. Measured against the exact reference, that moves top-5 logits by
//   0.14 on average and up to ~1.3, so llama.cpp's top-1 can differ from the exact one where its
//   top-2 are within ~0.25 (all such cases in the fixture are ties of that size). Top-1 must agree
//   at >= 99% of positions whose llama.cpp margin exceeds that, and where it does not, lserve's
//   token must be one llama.cpp scores within the same margin of its best.
constexpr double kExactTolerance = 5e-4;
constexpr double kTieMargin = 0.25;
constexpr double kTop1Agreement = 0.99;
constexpr double kMaxAbsDiff = 1.5;
constexpr double kMeanAbsDiff = 0.2;

TEST(GoldenModel, LogitsMatchExactReferenceAndLlamaCpp) {
  auto& m = test::default_model();
  const auto g = load_golden();
  test::GoldenLogitStats s;
  for (const auto& p : g["logit_prompts"]) {
    // Chunked prefill (17-token chunks) over scrambled pages.
    const auto logits =
        test::sequence_logits(*m.model, *m.backend, p["tokens"].get<std::vector<int32_t>>(), 17);
    ASSERT_NO_FATAL_FAILURE(test::add_golden_logits(p, logits, m.config.vocab_size, 0,
                                                    "f64_top5_logits", kTieMargin, s));
  }
  const double mean_diff = s.sum_diff / static_cast<double>(s.values);
  std::printf(
      "golden: %d positions; vs exact f64: max |diff| %.2e; vs llama.cpp: top-1 agreement %.4f "
      "(%.4f at %d positions with margin > %.2f), top-5 |diff| mean %.4f max %.4f\n",
      s.positions, s.max_ref, static_cast<double>(s.top1_same) / s.positions,
      static_cast<double>(s.decisive_same) / s.decisive, s.decisive, kTieMargin, mean_diff,
      s.max_diff);
  EXPECT_LE(s.max_ref, kExactTolerance);
  EXPECT_GE(static_cast<double>(s.decisive_same) / s.decisive, kTop1Agreement);
  EXPECT_GE(s.decisive, s.positions * 3 / 4);  // the margin filter must not hide most positions
  EXPECT_LE(s.max_diff, kMaxAbsDiff);
  EXPECT_LE(mean_diff, kMeanAbsDiff);
}

TEST(GoldenModel, ChunkSizeDoesNotChangeLogits) {
  auto& m = test::default_model();
  const auto tokens = m.tokenizer->encode(
      "Chunked prefill must give the same logits as one piece: "
      "the quick brown fox jumps over the lazy dog.",
      false);
  const auto whole = test::sequence_logits(*m.model, *m.backend, tokens, 1000, 64);
  const auto chunked = test::sequence_logits(*m.model, *m.backend, tokens, 5, 16);
  ASSERT_EQ(whole.size(), chunked.size());
  double max_diff = 0;
  for (size_t i = 0; i < whole.size(); ++i)
    max_diff = std::max<double>(max_diff, std::abs(whole[i] - chunked[i]));
  // Both are f32; only summation order differs.
  EXPECT_LT(max_diff, 2e-3);
}

}  // namespace
}  // namespace lserve
