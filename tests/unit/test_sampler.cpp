#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "core/error.h"
#include "engine/sampler.h"
#include "test_util.h"

namespace lserve {
namespace {

std::vector<float> random_logits(int n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<double> softmax(const std::vector<float>& l, double temp) {
  const double mx = *std::max_element(l.begin(), l.end());
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((l[i] - mx) / temp);
  for (auto& x : p) x /= s;
  return p;
}

TEST(Sampler, GreedyTakesArgmax) {
  std::mt19937_64 rng(test::test_seed());
  for (int trial = 0; trial < 20; ++trial) {
    auto l = random_logits(1 + static_cast<int>(rng() % 1000), rng);
    const auto want = std::max_element(l.begin(), l.end()) - l.begin();
    SamplingParams p;
    p.temperature = 0;
    EXPECT_EQ(sample_token(l, p, {}, rng), want);
  }
}

TEST(Sampler, TopPSamplesStayInsideTheNucleus) {
  std::mt19937_64 rng(test::test_seed());
  // Unit-variance logits over ~1000 tokens: no single token holds most of the mass, so the nucleus
  // has many members whatever the seed.
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> logits(997);
  for (auto& x : logits) x = dist(rng);
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_k = 0;
  p.min_p = 0;
  p.top_p = 0.7f;
  // The nucleus: most likely tokens until their mass reaches top_p.
  const auto probs = softmax(logits, p.temperature);
  std::vector<int> order(probs.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return probs[a] > probs[b]; });
  std::set<int> nucleus;
  double mass = 0;
  for (int i : order) {
    nucleus.insert(i);
    mass += probs[i];
    if (mass >= p.top_p) break;
  }
  ASSERT_GT(nucleus.size(), 1u);
  std::set<int> seen;
  std::mt19937_64 sample_rng(12345);
  for (int i = 0; i < 3000; ++i) {
    auto l = logits;
    const int t = sample_token(l, p, {}, sample_rng);
    ASSERT_TRUE(nucleus.count(t)) << "token " << t << " outside the nucleus";
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 1u);  // it does sample, not just take the argmax
}

TEST(Sampler, TopKAndMinPRestrictCandidates) {
  std::mt19937_64 rng(test::test_seed());
  auto logits = random_logits(500, rng);
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  SamplingParams p;
  p.temperature = 5.0f;  // flat, so restrictions matter
  p.top_p = 1.0f;
  p.min_p = 0;
  p.top_k = 3;
  const std::set<int> top3(order.begin(), order.begin() + 3);
  for (int i = 0; i < 500; ++i) {
    auto l = logits;
    ASSERT_TRUE(top3.count(sample_token(l, p, {}, rng)));
  }
  p.top_k = 0;
  p.min_p = 0.5f;
  const auto probs = softmax(logits, p.temperature);
  const double pmax = *std::max_element(probs.begin(), probs.end());
  for (int i = 0; i < 500; ++i) {
    auto l = logits;
    const int t = sample_token(l, p, {}, rng);
    ASSERT_GE(probs[t], 0.5 * pmax * (1 - 1e-9));
  }
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  std::mt19937_64 rng(test::test_seed());
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, 3.0f, -1.0f};
  SamplingParams p;
  p.temperature = 1.3f;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  const auto probs = softmax(logits, p.temperature);
  const int n = 40000;
  std::vector<int> counts(logits.size());
  for (int i = 0; i < n; ++i) {
    auto l = logits;
    ++counts[sample_token(l, p, {}, rng)];
  }
  for (size_t i = 0; i < logits.size(); ++i) {
    const double sd = std::sqrt(probs[i] * (1 - probs[i]) / n);
    EXPECT_NEAR(counts[i] / static_cast<double>(n), probs[i], 5 * sd + 1e-4) << "token " << i;
  }
}

TEST(Sampler, SameSeedSameTokens) {
  std::mt19937_64 rng(test::test_seed());
  auto logits = random_logits(300, rng);
  SamplingParams p;
  std::mt19937_64 a(99), b(99);
  for (int i = 0; i < 50; ++i) {
    auto la = logits, lb = logits;
    EXPECT_EQ(sample_token(la, p, {}, a), sample_token(lb, p, {}, b));
  }
}

TEST(Sampler, RepetitionPenaltyDemotesRecentTokens) {
  std::vector<float> logits = {5.0f, 4.9f, 1.0f, -2.0f};
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 1.5f;
  p.repeat_last_n = 2;
  std::mt19937_64 rng(1);
  const std::vector<int32_t> history = {0, 3};
  auto l = logits;
  EXPECT_EQ(sample_token(l, p, history, rng), 1);
  EXPECT_FLOAT_EQ(l[0], 5.0f / 1.5f);
  EXPECT_FLOAT_EQ(l[3], -2.0f * 1.5f);  // negative logits are pushed down, not up
  // Outside the window the penalty does not apply.
  const std::vector<int32_t> old = {0, 2, 3};
  l = logits;
  EXPECT_EQ(sample_token(l, p, old, rng), 0);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOnlyGeneratedTokens) {
  const std::vector<float> logits = {3.0f, 2.5f, 2.4f, 0.0f};
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  std::mt19937_64 rng(1);
  // Prompt {1, 1}, then generated {0, 0, 1}: token 0 loses 2 x 0.5 + 0.25, token 1 (once in the
  // generated part) 0.5 + 0.25; the prompt's two 1s do not count.
  const std::vector<int32_t> history = {1, 1, 0, 0, 1};
  auto l = logits;
  EXPECT_EQ(sample_token(l, p, history, rng, 2), 2);
  EXPECT_FLOAT_EQ(l[0], 3.0f - 1.25f);
  EXPECT_FLOAT_EQ(l[1], 2.5f - 0.75f);
  EXPECT_FLOAT_EQ(l[2], 2.4f);
  EXPECT_FLOAT_EQ(l[3], 0.0f);
  // Negative values reward repetition, as in OpenAI's API.
  p.frequency_penalty = -0.5f;
  p.presence_penalty = 0;
  l = logits;
  EXPECT_EQ(sample_token(l, p, history, rng, 2), 0);
  EXPECT_FLOAT_EQ(l[1], 3.0f);
  // Nothing generated yet: no change.
  l = logits;
  EXPECT_EQ(sample_token(l, p, history, rng, history.size()), 0);
  EXPECT_EQ(l, logits);
}

TEST(Sampler, LogitBiasShiftsTheNamedTokens) {
  const std::vector<float> logits = {3.0f, 2.5f, 2.4f, 0.0f};
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{3, 100.0f}, {0, -1.0f}};
  std::mt19937_64 rng(1);
  auto l = logits;
  EXPECT_EQ(sample_token(l, p, {}, rng), 3);
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  EXPECT_FLOAT_EQ(l[3], 100.0f);
  // -100 bans the greedy choice.
  p.logit_bias = {{0, -100.0f}};
  l = logits;
  EXPECT_EQ(sample_token(l, p, {}, rng), 1);
}

TEST(Sampler, InvalidParametersAreRejected) {
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
