// The engine's side of sampling: SamplingParams and a sequence's history become the sampling
// op's row and logit edits (engine/step_sampling.h), applied by the reference sampler; and
// parameter validation. The sampler itself is tested in test_sampling.cpp.
#include <gtest/gtest.h>

#include <vector>

#include "backend/sampling.h"
#include "core/error.h"
#include "engine/step_sampling.h"

namespace lserve {
namespace {

// Greedy-samples `logits` for a sequence with `params` whose tokens are `history`, the first
// `prompt_len` of them the prompt; `logits` keeps the edited values.
int32_t greedy(std::vector<float>& logits, SamplingParams params,
               const std::vector<int32_t>& history, int32_t prompt_len = 0) {
  Sequence seq;
  params.temperature = 0;
  seq.params = params;
  seq.tokens = history;
  seq.prompt_len = prompt_len;
  for (size_t i = static_cast<size_t>(prompt_len); i < history.size(); ++i) {
    ++seq.output_counts[history[i]];
  }
  std::vector<LogitEdit> edits;
  const SampleRow row = sampling_row(seq, static_cast<int32_t>(logits.size()), edits);
  return sample_row(logits, row, edits).token;
}

TEST(StepSampling, RepetitionPenaltyDemotesRecentTokens) {
  std::vector<float> logits = {5.0f, 4.9f, 1.0f, -2.0f};
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  p.repeat_last_n = 2;
  const std::vector<int32_t> history = {0, 3};
  auto l = logits;
  EXPECT_EQ(greedy(l, p, history), 1);
  EXPECT_FLOAT_EQ(l[0], 5.0f / 1.5f);
  EXPECT_FLOAT_EQ(l[3], -2.0f * 1.5f);  // negative logits are pushed down, not up
  // Outside the window the penalty does not apply.
  const std::vector<int32_t> old = {0, 2, 3};
  l = logits;
  EXPECT_EQ(greedy(l, p, old), 0);
}

TEST(StepSampling, PresenceAndFrequencyPenaltiesCountOnlyGeneratedTokens) {
  const std::vector<float> logits = {3.0f, 2.5f, 2.4f, 0.0f};
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  // Prompt {1, 1}, then generated {0, 0, 1}: token 0 loses 2 x 0.5 + 0.25, token 1 (once in the
  // generated part) 0.5 + 0.25; the prompt's two 1s do not count.
  const std::vector<int32_t> history = {1, 1, 0, 0, 1};
  auto l = logits;
  EXPECT_EQ(greedy(l, p, history, 2), 2);
  EXPECT_FLOAT_EQ(l[0], 3.0f - 1.25f);
  EXPECT_FLOAT_EQ(l[1], 2.5f - 0.75f);
  EXPECT_FLOAT_EQ(l[2], 2.4f);
  EXPECT_FLOAT_EQ(l[3], 0.0f);
  // Negative values reward repetition, as in OpenAI's API.
  p.frequency_penalty = -0.5f;
  p.presence_penalty = 0;
  l = logits;
  EXPECT_EQ(greedy(l, p, history, 2), 0);
  EXPECT_FLOAT_EQ(l[1], 3.0f);
  // Nothing generated yet: no change.
  l = logits;
  EXPECT_EQ(greedy(l, p, history, static_cast<int32_t>(history.size())), 0);
  EXPECT_EQ(l, logits);
}

TEST(StepSampling, LogitBiasShiftsTheNamedTokens) {
  const std::vector<float> logits = {3.0f, 2.5f, 2.4f, 0.0f};
  SamplingParams p;
  p.logit_bias = {{3, 100.0f}, {0, -1.0f}};
  auto l = logits;
  EXPECT_EQ(greedy(l, p, {}), 3);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[3], 100.0f);
  // -100 bans the greedy choice.
  p.logit_bias = {{0, -100.0f}};
  l = logits;
  EXPECT_EQ(greedy(l, p, {}), 1);
}

TEST(StepSampling, InvalidParametersAreRejected) {
  auto bad = [](auto mutate) {
    SamplingParams p;
    mutate(p);
    EXPECT_THROW(p.validate(), Error);
  };
  bad([](SamplingParams& p) { p.temperature = -0.1f; });
  bad([](SamplingParams& p) { p.temperature = NAN; });
  bad([](SamplingParams& p) { p.top_p = 0; });
  bad([](SamplingParams& p) { p.top_p = 1.5f; });
  bad([](SamplingParams& p) { p.top_k = -1; });
  bad([](SamplingParams& p) { p.min_p = 2; });
  bad([](SamplingParams& p) { p.max_tokens = 0; });
  bad([](SamplingParams& p) { p.repetition_penalty = 0; });
  bad([](SamplingParams& p) { p.stop = {""}; });
  bad([](SamplingParams& p) { p.presence_penalty = 2.5f; });
  bad([](SamplingParams& p) { p.frequency_penalty = -3.0f; });
  bad([](SamplingParams& p) { p.frequency_penalty = NAN; });
  bad([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; });
  bad([](SamplingParams& p) { p.logit_bias = {{5, 101.0f}}; });
  bad([](SamplingParams& p) {
    p.logit_bias = std::vector<std::pair<int32_t, float>>(301, {1, 1.0f});
  });
  SamplingParams ok;
  EXPECT_NO_THROW(ok.validate());
}

}  // namespace
}  // namespace lserve
