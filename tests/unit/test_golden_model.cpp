// The default model against llama.cpp (fixture recorded by scripts/make-golden.py): identical
// tokenization, and logits that agree within what llama.cpp's quantized arithmetic explains.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace lserve {
namespace {

nlohmann::json load_golden() {
  std::ifstream in(test::fixture_path("golden_smollm2.json"));
  EXPECT_TRUE(in.good()) << "missing fixture golden_smollm2.json";
  return nlohmann::json::parse(in);
}

TEST(GoldenModel, TokenizationMatchesLlamaCpp) {
  auto& m = test::default_model();
  const auto g = load_golden();
  int checked = 0;
  for (const char* section : {"logit_prompts", "token_only"}) {
    for (const auto& p : g[section]) {
      const auto text = p["text"].get<std::string>();
      const auto want = p["tokens"].get<std::vector<int32_t>>();
      EXPECT_EQ(m.tokenizer->encode(text, p["special"].get<bool>()), want) << "text: " << text;
      // Decoding must give back the text exactly.
      EXPECT_EQ(m.tokenizer->decode(want), text);
      ++checked;
    }
  }
  EXPECT_GE(checked, 30);
}

// Two references for the same logits:
// - exact: a float64 NumPy forward (scripts/reference_forward.py). lserve computes in f32, so the
//   logits (magnitude ~30) must agree to ~1e-5 relative; 5e-4 absolute leaves room for f32 summation order only.
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
  const int vocab = m.config.vocab_size;
  int positions = 0, decisive = 0, decisive_same = 0, top1_same = 0;
  double max_diff = 0, sum_diff = 0, max_exact_diff = 0;
  int64_t n_diff = 0;
  for (const auto& p : g["logit_prompts"]) {
    const auto tokens = p["tokens"].get<std::vector<int32_t>>();
    const auto ids = p["top5_ids"].get<std::vector<std::vector<int32_t>>>();
    const auto vals = p["top5_logits"].get<std::vector<std::vector<double>>>();
    const auto exact = p["f64_top5_logits"].get<std::vector<std::vector<double>>>();
    // Chunked prefill (17-token chunks) over scrambled pages.
    const auto logits = test::sequence_logits(*m.model, *m.backend, tokens, 17);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const float* row = logits.data() + i * vocab;
      const auto ours = static_cast<int32_t>(std::max_element(row, row + vocab) - row);
      ++positions;
      top1_same += ours == ids[i][0];
      const double margin = vals[i][0] - vals[i][1];
      if (margin >= kTieMargin) {
        ++decisive;
        decisive_same += ours == ids[i][0];
      }
      if (ours != ids[i][0]) {
        const auto it = std::find(ids[i].begin(), ids[i].end(), ours);
        ASSERT_NE(it, ids[i].end()) << p["name"] << " position " << i << ": token " << ours
                                    << " is not in llama.cpp's top 5";
        EXPECT_LE(vals[i][0] - vals[i][it - ids[i].begin()], kTieMargin)
            << p["name"] << " position " << i;
      }
      for (int j = 0; j < 5; ++j) {
        const double d = std::abs(row[ids[i][j]] - vals[i][j]);
        max_diff = std::max(max_diff, d);
        sum_diff += d;
        ++n_diff;
        max_exact_diff = std::max(max_exact_diff, std::abs(row[ids[i][j]] - exact[i][j]));
      }
    }
  }
  const double mean_diff = sum_diff / static_cast<double>(n_diff);
  std::printf(
      "golden: %d positions; vs exact f64: max |diff| %.2e; vs llama.cpp: top-1 agreement %.4f "
      "(%.4f at %d positions with margin >= %.2f), top-5 |diff| mean %.4f max %.4f\n",
      positions, max_exact_diff, static_cast<double>(top1_same) / positions,
      static_cast<double>(decisive_same) / decisive, decisive, kTieMargin, mean_diff, max_diff);
  EXPECT_LE(max_exact_diff, kExactTolerance);
  EXPECT_GE(static_cast<double>(decisive_same) / decisive, kTop1Agreement);
  EXPECT_GE(decisive, positions * 3 / 4);  // the margin filter must not hide most positions
  EXPECT_LE(max_diff, kMaxAbsDiff);
  EXPECT_LE(mean_diff, kMeanAbsDiff);
}

TEST(GoldenModel, ChunkSizeDoesNotChangeLogits) {
  auto& m = test::default_model();
  const auto tokens = m.tokenizer->encode("Chunked prefill must give the same logits as one piece: "
                                          "the quick brown fox jumps over the lazy dog.", false);
  const auto whole = test::sequence_logits(*m.model, *m.backend, tokens, 1000, 64);
  const auto chunked = test::sequence_logits(*m.model, *m.backend, tokens, 5, 16);
  ASSERT_EQ(whole.size(), chunked.size());
  double max_diff = 0;
  for (size_t i = 0; i < whole.size(); ++i) max_diff = std::max<double>(max_diff, std::abs(whole[i] - chunked[i]));
  // Both are f32; only summation order differs.
  EXPECT_LT(max_diff, 2e-3);
}

}  // namespace
}  // namespace lserve
