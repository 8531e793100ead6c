#include <gtest/gtest.h>

#include "engine/head_profiler.h"
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
  const HeadProfile p = profile_heads(*m.model, *m.backend, *m.tokenizer, o,
                                      [&](int done, int total) {
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

}  // namespace
}  // namespace lserve
