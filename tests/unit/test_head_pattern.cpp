#include <gtest/gtest.h>

#include "core/error.h"
#include "sparse/head_pattern.h"
#include "sparse/sparse_config.h"

namespace lserve {
namespace {

TEST(HeadPattern, ParsesDuoAttentionTsv) {
  const auto p = HeadPattern::parse("0.9\t0.1\t0.5\n0.2 0.8 0.3\r\n\n", "t.tsv", 2, 3);
  ASSERT_EQ(p.gates.size(), 2u);
  EXPECT_DOUBLE_EQ(p.gates[1][1], 0.8);
  const auto again = HeadPattern::parse(p.to_tsv(), "again", 2, 3);
  EXPECT_EQ(again.gates, p.gates);
}

TEST(HeadPattern, ShapeMismatchNamesBothShapes) {
  try {
    HeadPattern::parse("1 0\n0 1\n", "heads.tsv", 30, 3);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("heads.tsv"), std::string::npos);
    EXPECT_NE(what.find("2 layers x 2 KV heads"), std::string::npos) << what;
    EXPECT_NE(what.find("30 layers x 3 KV heads"), std::string::npos) << what;
  }
  EXPECT_THROW(HeadPattern::parse("1 0\n0\n", "ragged", 2, 2), Error);
  EXPECT_THROW(HeadPattern::parse("1 x\n0 1\n", "text", 2, 2), Error);
  EXPECT_THROW(HeadPattern::parse("1 nan\n0 1\n", "nan", 2, 2), Error);
}

TEST(HeadPattern, QuantileThresholdIsDeterministicWithTies) {
  // Gates with ties: 0.5 appears four times.
  const auto p = HeadPattern::parse("0.5 0.9 0.1\n0.5 0.5 0.5\n", "t", 2, 3);
  const auto none = p.retrieval_flags(0.0);
  for (const auto& l : none) {
    for (bool r : l) EXPECT_TRUE(r);
  }
  // Half of six heads: the 0.1 head, then the first two 0.5 heads in (layer, head) order.
  const auto half = p.retrieval_flags(0.5);
  const std::vector<std::vector<bool>> want = {{false, true, false}, {false, true, true}};
  EXPECT_EQ(half, want);
  const auto all = p.retrieval_flags(1.0);
  for (const auto& l : all) {
    for (bool r : l) EXPECT_FALSE(r);
  }
}

TEST(SparseConfig, RejectsInconsistentValues) {
  auto bad = [](auto mutate) {
    SparseAttentionConfig s;
    mutate(s);
    EXPECT_THROW(s.validate(), Error);
  };
  bad([](auto& s) { s.logical_page_size = 24; });  // 64 % 24 != 0
  bad([](auto& s) { s.token_budget = 100; });      // not a multiple of P
  bad([](auto& s) { s.token_budget = 64; });       // one page only
  bad([](auto& s) { s.sink_tokens = -1; });
  bad([](auto& s) { s.local_tokens = 0; });
  bad([](auto& s) { s.prefill_local_tokens = 100; });  // below local
  bad([](auto& s) { s.static_sparsity = 1.5; });
  bad([](auto& s) { s.selector_interval = 0; });
  bad([](auto& s) { s.selector_skip_layers = -2; });
  bad([](auto& s) { s.prefill_estimate = PrefillEstimate::kSampledRows; });  // sparsity off
  bad([](auto& s) {
    s.prefill_sparsity = 0.9;
    s.prefill_dense_tail = -1;
  });
  SparseAttentionConfig ok;
  EXPECT_NO_THROW(ok.validate());
  ok.prefill_sparsity = 0.9;
  ok.prefill_estimate = PrefillEstimate::kSampledRows;
  ok.prefill_dense_tail = 256;
  EXPECT_NO_THROW(ok.validate());
  try {
    SparseAttentionConfig s;
    s.logical_page_size = 24;
    s.validate();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--logical-page-size"), std::string::npos);
  }
}

}  // namespace
}  // namespace lserve
