// The dynamic prefill block estimate (sparse/prefill_blocks.h) against a from-scratch reference
// in double, and the keep rule's properties.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "sparse/prefill_blocks.h"
#include "test_util.h"

namespace lserve {
namespace {

struct Inputs {
  int group, d, nk;
  std::vector<int32_t> q_pos;
  std::vector<float> q, k;  // q: [nq][group][d]; k: [nk][d]
  PrefillBlockQuery view() const {
    PrefillBlockQuery in;
    in.q = q.data();
    in.q_stride = static_cast<int64_t>(group) * d;
    in.q_pos = q_pos.data();
    in.nq = static_cast<int>(q_pos.size());
    in.group = group;
    in.head_dim = d;
    in.k = k.data();
    in.nk = nk;
    in.scale = static_cast<float>(1.0 / std::sqrt(d));
    return in;
  }
};

// Queries at positions [first, last] (one block), keys at 0 .. last.
Inputs random_inputs(std::mt19937_64& rng, int group, int d, int32_t first, int32_t last) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Inputs x{group, d, last + 1, {}, {}, {}};
  for (int32_t p = first; p <= last; ++p) x.q_pos.push_back(p);
  x.q.resize(x.q_pos.size() * group * d);
  x.k.resize(static_cast<size_t>(x.nk) * d);
  for (float& v : x.q) v = dist(rng);
  for (float& v : x.k) v = dist(rng);
  return x;
}

// The definition, element by element: compressed row a (present rows only) against column b <= a,
// each the sum over the S antidiagonal pairs (a S + S - 1 - i, b S + i) that exist.
std::vector<double> reference_mass(const Inputs& x) {
  constexpr int S = kAntidiagStride, B = kPrefillBlock;
  const int32_t qb = x.q_pos.front() / B;
  std::vector<double> mass(qb + 1, 0.0);
  const double scale = 1.0 / std::sqrt(x.d);
  auto q_row = [&](int32_t pos) -> const float* {
    if (pos < x.q_pos.front() || pos > x.q_pos.back()) return nullptr;
    return x.q.data() + static_cast<size_t>(pos - x.q_pos.front()) * x.group * x.d;
  };
  std::vector<int32_t> rows;
  for (int32_t p : x.q_pos) {
    if (rows.empty() || rows.back() != p / S) rows.push_back(p / S);
  }
  for (int g = 0; g < x.group; ++g) {
    for (int32_t a : rows) {
      std::vector<double> s(a + 1, 0.0);
      for (int32_t b = 0; b <= a; ++b) {
        for (int i = 0; i < S; ++i) {
          const float* q = q_row(a * S + S - 1 - i);
          const int32_t kp = b * S + i;
          if (q == nullptr || kp >= x.nk) continue;
          for (int c = 0; c < x.d; ++c) {
            s[b] += static_cast<double>(q[g * x.d + c]) * x.k[static_cast<size_t>(kp) * x.d + c];
          }
        }
        s[b] *= scale / S;
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double v : s) sum += std::exp(v - mx);
      for (int32_t b = 0; b <= a; ++b) mass[b * S / B] += std::exp(s[b] - mx) / sum;
    }
  }
  for (double& m : mass) m /= static_cast<double>(x.group * rows.size());
  return mass;
}

// The sampled-row estimate by its definition: the queries at p % kSampledRowStride ==
// kSampledRowStride - 1 and the last one, each row's exact softmax over keys 0 .. p summed per
// key block, averaged over the rows and the group's query heads.
std::vector<double> reference_sampled_mass(const Inputs& x) {
  const int32_t qb = x.q_pos.front() / kPrefillBlock;
  std::vector<double> mass(qb + 1, 0.0);
  const double scale = 1.0 / std::sqrt(x.d);
  int rows = 0;
  for (size_t r = 0; r < x.q_pos.size(); ++r) {
    const int32_t p = x.q_pos[r];
    if (r + 1 < x.q_pos.size() && p % kSampledRowStride != kSampledRowStride - 1) continue;
    ++rows;
    for (int g = 0; g < x.group; ++g) {
      const float* q = x.q.data() + (r * x.group + g) * x.d;
      std::vector<double> s(p + 1, 0.0);
      for (int32_t j = 0; j <= p; ++j) {
        for (int c = 0; c < x.d; ++c) s[j] += static_cast<double>(q[c]) * x.k[j * x.d + c];
        s[j] *= scale;
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double v : s) sum += std::exp(v - mx);
      for (int32_t j = 0; j <= p; ++j) mass[j / kPrefillBlock] += std::exp(s[j] - mx) / sum;
    }
  }
  for (double& m : mass) m /= static_cast<double>(x.group * rows);
  return mass;
}

// `estimate` against its reference on fresh random inputs, (group, head_dim, first query, last
// query): blocks 0 to 4, rows that start and end inside a stride group (and a block whose last
// query is not a sampled row), a last key column that is partial, a single query.
void expect_matches(PrefillEstimate estimate, std::vector<double> (*reference)(const Inputs&)) {
  std::mt19937_64 rng(test::test_seed());
  const int cases[][4] = {{3, 24, 0, 77},    {1, 64, 130, 255}, {4, 40, 387, 509},
                          {2, 16, 517, 517}, {3, 72, 256, 259}, {2, 32, 601, 639}};
  for (const auto& c : cases) {
    const Inputs x = random_inputs(rng, c[0], c[1], c[2], c[3]);
    const std::vector<double> got = prefill_block_mass(x.view(), estimate);
    const std::vector<double> want = reference(x);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_NEAR(std::accumulate(got.begin(), got.end(), 0.0), 1.0, 1e-9);
    for (size_t b = 0; b < got.size(); ++b) {
      EXPECT_NEAR(got[b], want[b], 1e-5) << "block " << b << " of queries " << c[2] << ".." << c[3];
    }
  }
}

TEST(PrefillBlocks, MassMatchesTheReference) {
  expect_matches(PrefillEstimate::kAntidiagonal, reference_mass);
}

TEST(PrefillBlocks, SampledRowsMatchTheReference) {
  expect_matches(PrefillEstimate::kSampledRows, reference_sampled_mass);
  EXPECT_EQ(parse_prefill_estimate("sampled-rows"), PrefillEstimate::kSampledRows);
  EXPECT_EQ(parse_prefill_estimate("antidiagonal"), PrefillEstimate::kAntidiagonal);
  EXPECT_THROW(parse_prefill_estimate("rows"), Error);
}

TEST(PrefillBlocks, AKeyBlockTheQueriesResembleCarriesTheMass) {
  std::mt19937_64 rng(test::test_seed());
  Inputs x = random_inputs(rng, 2, 32, 5 * kPrefillBlock, 5 * kPrefillBlock + 90);
  // Keys of block 2 point along the queries' mean direction, strongly.
  std::vector<float> mean(x.d, 0.0f);
  for (size_t r = 0; r < x.q.size() / x.d; ++r) {
    for (int c = 0; c < x.d; ++c) mean[c] += x.q[r * x.d + c];
  }
  for (int32_t j = 2 * kPrefillBlock; j < 3 * kPrefillBlock; ++j) {
    for (int c = 0; c < x.d; ++c) x.k[static_cast<size_t>(j) * x.d + c] = mean[c];
  }
  const std::vector<double> mass = prefill_block_mass(x.view());
  EXPECT_GT(mass[2], 0.5);
  const std::vector<int32_t> kept = keep_prefill_blocks(mass, 0.5);
  EXPECT_EQ(kept, (std::vector<int32_t>{0, 2, 5}));  // sink, the resembled block, the diagonal
}

TEST(PrefillBlocks, KeepRule) {
  const std::vector<double> mass = {0.05, 0.30, 0.10, 0.30, 0.05, 0.20};
  // Threshold 1 (or more): every block, whatever the shares.
  EXPECT_EQ(keep_prefill_blocks(mass, 1.0), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  // The largest shares until the threshold (a tie: the lower block first), plus 0 and the last.
  EXPECT_EQ(keep_prefill_blocks(mass, 0.25), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(keep_prefill_blocks(mass, 0.6), (std::vector<int32_t>{0, 1, 3, 5}));
  EXPECT_EQ(keep_prefill_blocks(mass, 0.85), (std::vector<int32_t>{0, 1, 2, 3, 5}));
  EXPECT_EQ(keep_prefill_blocks({1.0}, 0.1), (std::vector<int32_t>{0}));
  // More mass never keeps fewer blocks.
  std::mt19937_64 rng(test::test_seed());
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> m(23);
  for (double& v : m) v = u(rng);
  const double total = std::accumulate(m.begin(), m.end(), 0.0);
  for (double& v : m) v /= total;
  std::vector<int32_t> prev;
  for (double t = 0.05; t < 1.0; t += 0.05) {
    const std::vector<int32_t> kept = keep_prefill_blocks(m, t);
    EXPECT_TRUE(std::includes(kept.begin(), kept.end(), prev.begin(), prev.end())) << t;
    double sum = 0;
    for (int32_t b : kept) sum += m[b];
    EXPECT_GE(sum, t - 1e-12);
    prev = kept;
  }
}

}  // namespace
}  // namespace lserve
