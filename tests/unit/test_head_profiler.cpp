#include <gtest/gtest.h>

#include "core/error.h"
#include "engine/head_profiler.h"
#include "sparse/prefill_blocks.h"
#include "test_util.h"

namespace lserve {
namespace {

TEST(HeadProfiler, RanksHeadsOfTheDefaultModel) {
  auto& m = test::default_model();
  HeadProfileOptions o;
  o.lengths = {300};
  o.depths = {0.5};
  o.probe_queries = 8;
  o.sink_tokens = 16;
  o.local_tokens = 32;
  int calls = 0;
  const HeadProfile p =
      profile_heads(*m.model, *m.backend, *m.tokenizer, o, [&](int done, int total) {
        ++calls;
        EXPECT_EQ(total, 1);
      });
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(p.pattern.gates.size(), 30u);
  double mx = 0, mn = 1;
  for (const auto& row : p.pattern.gates) {
    ASSERT_EQ(row.size(), 3u);
    for (double g : row) {
      EXPECT_GE(g, 0.0);
      mx = std::max(mx, g);
      mn = std::min(mn, g);
    }
  }
  EXPECT_DOUBLE_EQ(mx, 1.0);
  EXPECT_LT(mn, 0.5);  // heads differ: the ranking carries information
  // The pattern round-trips through the TSV format the engine loads.
  EXPECT_EQ(HeadPattern::parse(p.pattern.to_tsv(), "profile", 30, 3).gates.size(), 30u);
}

TEST(HeadProfiler, WindowCoveringThePromptCostsNothing) {
  auto& m = test::default_model();
  HeadProfileOptions o;
  o.lengths = {200};
  o.depths = {0.3};
  o.probe_queries = 4;
  o.sink_tokens = 0;
  o.local_tokens = 100000;  // streaming-only attention then sees everything
  const HeadProfile p = profile_heads(*m.model, *m.backend, *m.tokenizer, o, nullptr);
  for (const auto& row : p.error) {
    for (double e : row) EXPECT_LT(e, 1e-10);
  }
}

// Given prompts (what `profile-heads --calibration tasks` builds): each prompt's own probe count is
// used, and a probe over positions the window covers costs nothing while one far from the fact
// does not.
TEST(HeadProfiler, GivenPromptsAreProbedAtTheirOwnPositions) {
  auto& m = test::default_model();
  HeadProfileOptions o;
  o.sink_tokens = 4;
  o.local_tokens = 16;
  const auto text = m.tokenizer->encode(
      "The pass key is 71432. Remember it. The grass is green. The sky is blue. The sun is "
      "yellow. Here we go. There and back again. The grass is green. The sky is blue. The sun is "
      "yellow. Here we go. There and back again. What is the pass key? The pass key is 71432.",
      false, m.tokenizer->add_bos());
  ASSERT_GT(text.size(), 40u);
  std::vector<CalibrationPrompt> prompts = {{text, 4}, {text, 2}};
  int calls = 0;
  const HeadProfile p = profile_heads(*m.model, *m.backend, prompts, o, [&](int done, int total) {
    EXPECT_EQ(total, 2);
    EXPECT_EQ(done, ++calls);
  });
  EXPECT_EQ(p.prompts, 2);
  double mx = 0;
  for (const auto& row : p.pattern.gates) {
    for (double g : row) {
      EXPECT_GE(g, 0.0);
      EXPECT_LE(g, 1.0);
      mx = std::max(mx, g);
    }
  }
  EXPECT_DOUBLE_EQ(mx, 1.0);
  // Probing only the last few positions with a window covering them and everything before: nothing
  // is lost.
  o.local_tokens = 100000;
  const HeadProfile all = profile_heads(*m.model, *m.backend, prompts, o, nullptr);
  for (const auto& row : all.error) {
    for (double e : row) EXPECT_LT(e, 1e-10);
  }
  prompts[0].probe_queries = 0;
  EXPECT_THROW(profile_heads(*m.model, *m.backend, prompts, o, nullptr), Error);
}

// Prefill-sparsity recall at the probed rows: a passkey prompt of several 128-token blocks, probed
// from 3 rows before its last block starts (so two query blocks' estimates). Threshold 1 keeps
// every block and so all of the rows' attention; lower thresholds keep fewer blocks and less of
// it, never more.
TEST(HeadProfiler, PrefillRecallFallsWithTheThreshold) {
  auto& m = test::default_model();
  std::string text = "The pass key is 71432. Remember it. ";
  for (int i = 0; i < 60; ++i) text += "The grass is green. The sky is blue. The sun is yellow. ";
  text += "What is the pass key? The pass key is 71432.";
  const auto tokens = m.tokenizer->encode(text, false, m.tokenizer->add_bos());
  ASSERT_GT(tokens.size(), 3u * kPrefillBlock);
  const int probes = static_cast<int>(tokens.size() % kPrefillBlock) + 3;
  ASSERT_GT(probes, 3) << "the prompt must end inside a block";
  const std::vector<double> t = {0.3, 0.9, 1.0};
  int calls = 0;
  const auto r = prefill_recall(*m.model, *m.backend, {{tokens, probes}}, t,
                                PrefillEstimate::kAntidiagonal, [&](int, int) { ++calls; });
  EXPECT_EQ(calls, 1);
  ASSERT_EQ(r.size(), 3u);
  for (const PrefillRecall& x : r) EXPECT_EQ(x.rows, 30 * 9 * probes);  // layers x q heads x rows
  EXPECT_NEAR(r[2].mean, 1.0, 1e-9);
  EXPECT_NEAR(r[2].min, 1.0, 1e-9);
  EXPECT_EQ(r[2].below, 0.0);
  EXPECT_DOUBLE_EQ(r[2].blocks, 1.0);
  EXPECT_LT(r[0].blocks, r[1].blocks);
  EXPECT_LE(r[1].blocks, r[2].blocks);
  EXPECT_LT(r[0].mean, r[1].mean);
  EXPECT_LE(r[1].mean, r[2].mean);
  EXPECT_GT(r[0].mean, 0.0);
  EXPECT_THROW(prefill_recall(*m.model, *m.backend, {{tokens, probes}}, {0.0},
                              PrefillEstimate::kAntidiagonal, nullptr),
               Error);
  // The sampled-row estimate through the same probe: every block at 1, fewer below.
  const auto s = prefill_recall(*m.model, *m.backend, {{tokens, probes}}, {0.3, 1.0},
                                PrefillEstimate::kSampledRows, nullptr);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].rows, 30 * 9 * probes);
  EXPECT_NEAR(s[1].mean, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(s[1].blocks, 1.0);
  EXPECT_LT(s[0].blocks, 1.0);
  EXPECT_LT(s[0].mean, s[1].mean);
}

}  // namespace
}  // namespace lserve
