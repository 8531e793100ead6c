// What the HTTP server needs from the engine: long prompts that do not delay newcomers or running
// streams, log-probabilities, and validation that other threads may call.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "backend/sampling.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/logprobs.h"
#include "test_util.h"

namespace lserve {
namespace {

std::unique_ptr<Engine> make_engine(const EngineConfig& ec) {
  auto backend = std::make_unique<CpuBackend>(2);
  LoadedModel m =
      load_model(test::source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf", *backend, {});
  return std::make_unique<Engine>(std::move(backend), std::move(m), ec);
}

Request greedy(std::vector<int32_t> prompt, int max_tokens) {
  Request r;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  return r;
}

std::vector<int32_t> long_prompt(const Tokenizer& tok, int min_tokens) {
  std::string text;
  std::vector<int32_t> ids;
  while (static_cast<int>(ids.size()) < min_tokens) {
    text += "The quick brown fox jumps over the lazy dog near the river bank. ";
    ids = tok.encode(text, false);
  }
  return ids;
}

// Steps until `id` produces its first token (counting the step that produces it).
int steps_to_first_token(Engine& e, int64_t id, std::map<int64_t, int>* tokens_seen = nullptr) {
  for (int steps = 1; steps < 1000; ++steps) {
    bool got = false;
    for (const auto& out : e.step()) {
      if (tokens_seen) (*tokens_seen)[out.id] += static_cast<int>(out.new_tokens.size());
      got |= out.id == id && !out.new_tokens.empty();
    }
    if (got) return steps;
  }
  return -1;
}

TEST(EngineServing, ShortRequestIsNotDelayedByALongPromptAdmittedFirst) {
  EngineConfig ec;
  ec.scheduler.max_num_batched_tokens = 64;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  const int64_t long_id = e->submit(greedy(long_prompt(e->tokenizer(), 600), 4));
  e->step();  // the long prompt is running: its first 64-token chunk is in the cache
  const int64_t short_id = e->submit(greedy(e->tokenizer().encode("Hello there", false), 4));
  std::map<int64_t, int> seen;
  EXPECT_EQ(steps_to_first_token(*e, short_id, &seen), 1);
  EXPECT_EQ(seen[long_id], 0);  // the long prompt is still being prefilled
  while (e->has_work()) e->step();
}

TEST(EngineServing, RunningStreamsKeepDecodingWhileALongPromptIsPrefilled) {
  EngineConfig ec;
  ec.scheduler.max_num_batched_tokens = 64;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  // The long prompt is admitted first, so it comes first in admission order.
  const int64_t long_id = e->submit(greedy(long_prompt(e->tokenizer(), 600), 4));
  e->step();
  const int64_t short_id = e->submit(greedy(e->tokenizer().encode("Once upon a time", false), 6));
  std::map<int64_t, int> seen;
  for (int i = 0; i < 6; ++i) {
    for (const auto& out : e->step()) seen[out.id] += static_cast<int>(out.new_tokens.size());
  }
  EXPECT_EQ(seen[short_id], 6);  // one token per step, none skipped
  EXPECT_EQ(seen[long_id], 0);
  while (e->has_work()) e->step();
  EXPECT_EQ(e->blocks().pool().num_used(), 0);
}

TEST(EngineServing, LogprobsDescribeTheRawDistribution) {
  EngineConfig ec;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  Request r = greedy(e->tokenizer().encode("The capital of France is", false), 5);
  r.params.logprobs = 3;
  const int64_t id = e->submit(r);
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> lps;
  while (e->has_work()) {
    for (auto& out : e->step()) {
      if (out.id != id) continue;
      ASSERT_EQ(out.logprobs.size(), out.new_tokens.size());
      tokens.insert(tokens.end(), out.new_tokens.begin(), out.new_tokens.end());
      lps.insert(lps.end(), out.logprobs.begin(), out.logprobs.end());
    }
  }
  ASSERT_EQ(lps.size(), 5u);
  for (size_t i = 0; i < lps.size(); ++i) {
    ASSERT_EQ(lps[i].top.size(), 3u);
    EXPECT_EQ(lps[i].token, tokens[i]);
    // Greedy: the sampled token is the most likely one.
    EXPECT_EQ(lps[i].top[0].first, tokens[i]);
    EXPECT_FLOAT_EQ(lps[i].top[0].second, lps[i].logprob);
    EXPECT_LE(lps[i].logprob, 0.0f);
    EXPECT_GE(lps[i].top[0].second, lps[i].top[1].second);
    EXPECT_GE(lps[i].top[1].second, lps[i].top[2].second);
  }
}

TEST(EngineServing, SampledLogprobIsANormalisedLogSoftmax) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  SampleRow row{};
  row.top_p = 1.0f;
  row.vocab = 4;
  row.logprobs = 2;
  const SampledToken st = sample_row(logits, row, {});
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_EQ(st.token, 1);  // greedy: the first of the two best
  EXPECT_NEAR(st.logprob, 3.0 - std::log(z), 1e-6);
  ASSERT_EQ(st.n_top, 2);
  EXPECT_EQ(st.top_ids[0], 1);  // equal logits: the lower id first
  EXPECT_EQ(st.top_ids[1], 3);
  row.logprobs = 0;
  EXPECT_EQ(sample_row(logits, row, {}).n_top, 0);
}

TEST(EngineServing, ValidateRejectsWhatSubmitRejects) {
  EngineConfig ec;
  ec.num_pages = 4;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  Request r = greedy({1, 2, 3}, 4);
  EXPECT_NO_THROW(e->validate(r));
  r.params.logprobs = 21;
  EXPECT_THROW(e->validate(r), Error);
  r.params.logprobs = -1;
  r.sparse.token_budget = 17;
  EXPECT_THROW(e->validate(r), Error);
  r.sparse.token_budget = 0;
  r.prompt.assign(64, 1);
  EXPECT_THROW(e->validate(r), Error);
  EXPECT_FALSE(e->has_work());
}

}  // namespace
}  // namespace lserve
