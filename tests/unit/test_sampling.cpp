// The host reference of the sampling op (backend/sampling.h) against independent computations in
// doubles: Philox known answers, the edits' arithmetic, the sets top-k / min-p / top-p keep, the
// frequencies of the draw, reproducibility, the vocabulary limit and the logprobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "backend/sampling.h"
#include "core/philox.h"
#include "test_util.h"

namespace lserve {
namespace {

using test::make_row;
using test::random_logits;

// Samples a copy of `logits`, so that a test can reuse them.
SampledToken sample(std::vector<float> logits, const SampleRow& row,
                    const std::vector<LogitEdit>& edits = {}) {
  return sample_row(logits, row, edits);
}

// Ids by (logit desc, id asc).
std::vector<int> by_logit(const std::vector<float>& l, int n) {
  std::vector<int> idx(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return l[a] > l[b]; });
  return idx;
}

// Probabilities of the ids in `set` (softmax at temperature t, renormalised over the set).
std::vector<double> softmax_over(const std::vector<float>& l, const std::vector<int>& set,
                                 double t) {
  double mx = -INFINITY;
  for (int i : set) mx = std::max<double>(mx, l[i]);
  std::vector<double> p(set.size());
  double sum = 0;
  for (size_t j = 0; j < set.size(); ++j) sum += p[j] = std::exp((l[set[j]] - mx) / t);
  for (auto& x : p) x /= sum;
  return p;
}

TEST(Philox, KnownAnswers) {
  // Random123's kat_vectors for philox4x32_10.
  struct Case {
    uint32_t ctr[4], key[2], want[4];
  };
  const Case cases[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Case& c : cases) {
    uint32_t out[4];
    philox4x32_10(c.ctr, c.key, out);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], c.want[i]) << "word " << i;
    if (c.ctr[1] == 0 && c.ctr[2] == 0 && c.ctr[3] == 0) {
      EXPECT_EQ(philox_u32(c.key[0], c.key[1], c.ctr[0]), c.want[0]);
    }
  }
}

TEST(Philox, WordsLookUniform) {
  // Counter-based: consecutive counters must still give independent-looking words.
  std::mt19937_64 rng(test::test_seed());
  const uint32_t lo = static_cast<uint32_t>(rng()), hi = static_cast<uint32_t>(rng());
  std::vector<int> buckets(16, 0);
  const int n = 160000;
  for (int i = 0; i < n; ++i) ++buckets[philox_u32(lo, hi, static_cast<uint32_t>(i)) >> 28];
  double chi2 = 0;
  for (int b : buckets) chi2 += (b - n / 16.0) * (b - n / 16.0) / (n / 16.0);
  EXPECT_LT(chi2, 50.0);  // 15 degrees of freedom: p < 1e-5
}

TEST(Sampling, SampleExpIsCloseToExp) {
  for (float x = -90.0f; x <= 0.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    const float got = sampling::sample_exp(x);
    if (x <= -87.0f) {
      EXPECT_EQ(got, 0.0f);
    } else {
      EXPECT_NEAR(got, want, want * 3e-7) << x;
    }
  }
  EXPECT_EQ(sampling::sample_exp(0.0f), 1.0f);
  EXPECT_EQ(sampling::sample_exp(-INFINITY), 0.0f);
  EXPECT_EQ(sampling::sample_exp(NAN), 0.0f);
}

TEST(Sampling, KeysOrderLogits) {
  std::mt19937_64 rng(test::test_seed());
  auto l = random_logits(1000, rng, 50.0f);
  l.insert(l.end(), {0.0f, -0.0f, INFINITY, -INFINITY, 1e-40f, -1e-40f});
  for (float a : l) {
    for (float b : {l[rng() % l.size()], l[rng() % l.size()]}) {
      EXPECT_EQ(a < b, sampling::logit_key(a) < sampling::logit_key(b)) << a << " " << b;
      EXPECT_EQ(a == b, sampling::logit_key(a) == sampling::logit_key(b)) << a << " " << b;
    }
    EXPECT_EQ(sampling::key_logit(sampling::logit_key(a)), a);
  }
  EXPECT_EQ(sampling::logit_key(NAN), sampling::logit_key(-INFINITY));
}

TEST(Sampling, GreedyTakesTheFirstLargest) {
  std::mt19937_64 rng(test::test_seed());
  for (int trial = 0; trial < 50; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 1000);
    auto l = random_logits(n, rng);
    const int top = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
    // Copies of the maximum elsewhere: the smallest id wins.
    int want = top;
    for (int c = 0; c < static_cast<int>(rng() % 3); ++c) {
      const int at = static_cast<int>(rng() % n);
      l[at] = l[top];
      want = std::min(want, at);
    }
    if (n > 1 && trial % 5 == 0) l[(want + 1) % n] = NAN;  // NaN never wins
    EXPECT_EQ(sample(l, make_row(n, 0.0f)).token, want);
    EXPECT_EQ(sample(l, make_row(n, -1.0f, 5, 0.5f)).token, want);
    EXPECT_EQ(sample(l, make_row(n, NAN)).token, want);
  }
  // +0 and -0 tie.
  EXPECT_EQ(sample({-1.0f, -0.0f, 0.0f}, make_row(3, 0.0f)).token, 1);
}

TEST(Sampling, EditsApplyBiasThenPenaltyThenSubtraction) {
  std::mt19937_64 rng(test::test_seed());
  auto l = random_logits(64, rng);
  l[3] = 2.5f;
  l[7] = -1.5f;
  const std::vector<LogitEdit> edits = {
      {1, 0.75f, 1.0f, 0.0f},   // bias only
      {3, 0.5f, 1.3f, 0.25f},   // positive after the bias: divided
      {7, 0.5f, 1.3f, 0.25f},   // negative after the bias: multiplied
      {9, -3.0f, 2.0f, -0.5f},  // the bias makes it negative first
      {11, 0.0f, 1.0f, 1.75f},  // subtraction only
  };
  std::vector<float> want = l;
  for (const LogitEdit& e : edits) {
    const float b = want[e.token] + e.bias;
    const float r = e.rep_penalty == 1.0f ? b : (b > 0 ? b / e.rep_penalty : b * e.rep_penalty);
    want[e.token] = r - e.sub;
  }
  EXPECT_FLOAT_EQ(want[3], (2.5f + 0.5f) / 1.3f - 0.25f);
  EXPECT_FLOAT_EQ(want[7], (-1.5f + 0.5f) * 1.3f - 0.25f);
  std::vector<float> got = l;
  sample_row(got, make_row(64, 0.0f), edits);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(got[i], want[i]) << i;

  // The edited row is what gets sampled: a +100 bias forces a token, -inf bans the best one.
  const int best = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
  const int forced = (best + 5) % 64;
  EXPECT_EQ(
      sample(l, make_row(64, 1.0f, 0, 1.0f, 0.0f, rng()), {{forced, 100.0f, 1.0f, 0.0f}}).token,
      forced);
  EXPECT_NE(sample(l, make_row(64, 0.0f), {{best, -INFINITY, 1.0f, 0.0f}}).token, best);
  // Edits past the vocabulary are ignored; edits out of order reject the row.
  EXPECT_EQ(sample(l, make_row(60, 0.0f), {{62, 1000.0f, 1.0f, 0.0f}}).token,
            sample(l, make_row(60, 0.0f)).token);
  EXPECT_EQ(sample(l, make_row(64, 0.0f), {{5, 1.0f, 1.0f, 0.0f}, {2, 1.0f, 1.0f, 0.0f}}).token,
            -1);
  EXPECT_EQ(sample(l, make_row(64, 0.0f), {{5, 1.0f, 1.0f, 0.0f}, {5, 1.0f, 1.0f, 0.0f}}).token,
            -1);
}

// Samples many seeds and checks each token lies in `allowed`; returns the distinct tokens seen.
std::set<int> sample_many(const std::vector<float>& l, SampleRow row, const std::set<int>& allowed,
                          std::mt19937_64& rng, int draws = 400) {
  std::set<int> seen;
  for (int i = 0; i < draws; ++i) {
    const uint64_t seed = rng();
    row.seed_lo = static_cast<uint32_t>(seed);
    row.seed_hi = static_cast<uint32_t>(seed >> 32);
    row.counter = static_cast<uint32_t>(rng());
    const int t = sample(l, row).token;
    EXPECT_TRUE(allowed.count(t)) << "token " << t << " outside the kept set";
    seen.insert(t);
  }
  return seen;
}

TEST(Sampling, TopKKeepsTheKLargest) {
  std::mt19937_64 rng(test::test_seed());
  for (int n : {17, 1000}) {
    const auto l = random_logits(n, rng, 1.0f);
    for (int k : {1, 3, 40}) {
      const auto order = by_logit(l, n);
      const std::set<int> want(order.begin(), order.begin() + std::min(k, n));
      const auto seen = sample_many(l, make_row(n, 1.5f, k), want, rng);
      if (k == 1) {
        EXPECT_EQ(seen, want);
      }
      if (k >= 3) {
        EXPECT_GT(seen.size(), 2u);
      }
    }
    // top_k past the vocabulary is all of it.
    const std::set<int> all = [&] {
      std::set<int> s;
      for (int i = 0; i < n; ++i) s.insert(i);
      return s;
    }();
    sample_many(l, make_row(n, 1.0f, n + 5), all, rng, 50);
  }
}

TEST(Sampling, TopKTiesGoToLowerIds) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<float> l(100, 1.0f);
  l[50] = 3.0f;
  // The best token, then the 3 lowest ids of the tie.
  sample_many(l, make_row(100, 1.0f, 4), {50, 0, 1, 2}, rng);
  std::vector<float> flat(37, -INFINITY);
  sample_many(flat, make_row(37, 1.0f, 2), {0, 1}, rng);
}

TEST(Sampling, MinPKeepsTokensNearTheBest) {
  std::mt19937_64 rng(test::test_seed());
  const int n = 1000;
  const auto l = random_logits(n, rng, 1.0f);
  const double mx = *std::max_element(l.begin(), l.end());
  for (float min_p : {0.05f, 0.3f, 1.0f}) {
    for (float t : {0.7f, 1.0f}) {
      // Relaxed by 1e-5 so that rounding at the border cannot fail the test.
      std::set<int> want;
      for (int i = 0; i < n; ++i) {
        if (std::exp((l[i] - mx) / t) >= min_p * (1 - 1e-5)) want.insert(i);
      }
      const auto seen = sample_many(l, make_row(n, t, 0, 1.0f, min_p), want, rng);
      if (min_p == 1.0f) {
        EXPECT_EQ(seen.size(), 1u);
      }
    }
  }
}

TEST(Sampling, TopPKeepsTheShortestPrefix) {
  std::mt19937_64 rng(test::test_seed());
  for (int n : {17, 1000}) {
    const auto l = random_logits(n, rng, 1.0f);
    for (float top_p : {0.0f, 0.3f, 0.9f}) {
      for (int top_k : {0, 10}) {
        const float t = 0.8f;
        const auto order = by_logit(l, n);
        const std::vector<int> set(order.begin(), order.begin() + (top_k ? top_k : n));
        const auto p = softmax_over(l, set, t);
        // The prefix reaching top_p, plus the next token in case rounding moves the border.
        std::set<int> want;
        double cum = 0;
        for (size_t j = 0; j < set.size() && cum < top_p * (1 + 1e-6); ++j) {
          want.insert(set[j]);
          cum += p[j];
        }
        if (want.size() < set.size()) want.insert(set[want.size()]);
        const auto seen = sample_many(l, make_row(n, t, top_k, top_p), want, rng);
        if (top_p == 0.0f) {
          EXPECT_EQ(seen, std::set<int>{order[0]});
        }
        if (top_p == 0.9f) {
          EXPECT_GT(seen.size(), 2u);
        }
      }
    }
  }
}

// Draw frequencies over counters 0..draws-1 against probabilities p (chi-square, p-value ~1e-6).
void expect_frequencies(const std::vector<float>& l, SampleRow row, const std::vector<double>& p,
                        int draws) {
  std::vector<int> count(l.size(), 0);
  for (int i = 0; i < draws; ++i) {
    row.counter = static_cast<uint32_t>(i);
    ++count[sample(l, row).token];
  }
  double chi2 = 0;
  int dof = -1;
  for (size_t i = 0; i < l.size(); ++i) {
    const double e = p[i] * draws;
    if (e == 0) {
      EXPECT_EQ(count[i], 0) << "token " << i << " has probability 0";
      continue;
    }
    chi2 += (count[i] - e) * (count[i] - e) / e;
    ++dof;
  }
  // Well above the 1 - 1e-6 quantile for these degrees of freedom (<= 5: 35.9).
  EXPECT_LT(chi2, 36.0) << "dof " << dof;
}

TEST(Sampling, FrequenciesFollowTheSoftmax) {
  std::mt19937_64 rng(test::test_seed());
  const auto l = random_logits(5, rng, 1.0f);
  const std::vector<int> all = {0, 1, 2, 3, 4};
  for (float t : {0.6f, 1.0f, 1.7f}) {
    const SampleRow row = make_row(5, t, 0, 1.0f, 0.0f, rng());
    expect_frequencies(l, row, softmax_over(l, all, t), 40000);
  }
  // top-k 3: the softmax of the best three, renormalised.
  const auto order = by_logit(l, 5);
  const std::vector<int> best3(order.begin(), order.begin() + 3);
  const auto p3 = softmax_over(l, best3, 1.0);
  std::vector<double> p(5, 0.0);
  for (int j = 0; j < 3; ++j) p[best3[j]] = p3[j];
  expect_frequencies(l, make_row(5, 1.0f, 3, 1.0f, 0.0f, rng()), p, 40000);
}

TEST(Sampling, SameSeedAndCounterSameToken) {
  std::mt19937_64 rng(test::test_seed());
  const auto l = random_logits(1000, rng, 0.5f);
  const uint64_t seed = rng();
  std::set<int> seen;
  for (uint32_t c = 0; c < 100; ++c) {
    const SampleRow row = make_row(1000, 1.0f, 0, 0.95f, 0.0f, seed, c);
    const int t = sample(l, row).token;
    EXPECT_EQ(sample(l, row).token, t);
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 50u);  // a flat distribution: different counters differ
  // Another seed, another sequence.
  int same = 0;
  for (uint32_t c = 0; c < 100; ++c) {
    same += sample(l, make_row(1000, 1.0f, 0, 1.0f, 0.0f, seed, c)).token ==
            sample(l, make_row(1000, 1.0f, 0, 1.0f, 0.0f, seed + 1, c)).token;
  }
  EXPECT_LT(same, 10);
}

TEST(Sampling, VocabularyLimitIsRespected) {
  std::mt19937_64 rng(test::test_seed());
  auto l = random_logits(1000, rng);
  for (int i = 700; i < 1000; ++i) l[i] = 1000.0f;  // padding that would win
  std::set<int> allowed;
  for (int i = 0; i < 700; ++i) allowed.insert(i);
  EXPECT_LT(sample(l, make_row(700, 0.0f)).token, 700);
  sample_many(l, make_row(700, 2.0f), allowed, rng);
  sample_many(l, make_row(700, 1.0f, 2000, 0.99f), allowed, rng);
  // A vocabulary larger than the row is cut to the row.
  EXPECT_EQ(sample({1.0f, 3.0f, 2.0f}, make_row(10, 0.0f)).token, 1);
  EXPECT_EQ(sample({1.0f, 3.0f}, make_row(0, 0.0f)).token, -1);
}

TEST(Sampling, LogprobsAreOfTheRawRow) {
  std::mt19937_64 rng(test::test_seed());
  for (int n : {1, 17, 1000}) {
    auto l = random_logits(n + 3, rng);  // 3 ids past the vocabulary
    l[n] = 500.0f;
    if (n > 10) l[4] = l[9];  // a tie, ordered by id
    double mx = -INFINITY;
    for (int i = 0; i < n; ++i) mx = std::max<double>(mx, l[i]);
    double sum = 0;
    for (int i = 0; i < n; ++i) sum += std::exp(l[i] - mx);
    const double lse = mx + std::log(sum);
    const auto order = by_logit(l, n);
    // A bias forces the worst token: its logprob is still the raw one.
    const int forced = order.back();
    for (int want_top : {-1, 0, 5, 20}) {
      SampleRow row = make_row(n, 0.8f, 0, 0.9f, 0.0f, rng());
      row.logprobs = want_top;
      const SampledToken got = sample(l, row, {{forced, 1000.0f, 1.0f, 0.0f}});
      EXPECT_EQ(got.token, forced);
      const int n_top = want_top < 0 ? 0 : std::min(want_top, n);
      EXPECT_EQ(got.n_top, n_top);
      if (want_top < 0) {
        EXPECT_EQ(got.logprob, 0.0f);
      } else {
        EXPECT_NEAR(got.logprob, l[forced] - lse, 1e-5);
      }
      for (int i = 0; i < kMaxTopLogprobs; ++i) {
        if (i < n_top) {
          EXPECT_EQ(got.top_ids[i], order[i]) << i;
          EXPECT_NEAR(got.top_logprobs[i], l[order[i]] - lse, 1e-5) << i;
        } else {
          EXPECT_EQ(got.top_ids[i], -1);
          EXPECT_EQ(got.top_logprobs[i], 0.0f);
        }
      }
    }
  }
}

TEST(Sampling, OddVocabularySizes) {
  std::mt19937_64 rng(test::test_seed());
  for (int n : {1, 2, 17, 1000}) {
    const auto l = random_logits(n, rng);
    std::set<int> all;
    for (int i = 0; i < n; ++i) all.insert(i);
    for (const SampleRow& row :
         {make_row(n, 0.0f), make_row(n, 1.0f), make_row(n, 0.7f, 1), make_row(n, 0.7f, 40),
          make_row(n, 1.0f, 0, 0.5f), make_row(n, 1.0f, 0, 1.0f, 0.2f),
          make_row(n, 1.3f, 5, 0.9f, 0.05f)}) {
      sample_many(l, row, all, rng, 50);
    }
    if (n == 1) {
      EXPECT_EQ(sample(l, make_row(1, 1.0f, 3, 0.5f, 0.5f)).token, 0);
    }
  }
}

}  // namespace
}  // namespace lserve
