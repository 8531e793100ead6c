// Key statistics and page selection on the CPU backend, checked directly.
#include <gtest/gtest.h>

#include <random>

#include "backend/cpu/cpu_backend.h"
#include "kv/kv_cache.h"
#include "sparse/page_selection.h"
#include "test_util.h"

namespace lserve {
namespace {

constexpr int kD = 64;

struct StatsCache {
  CpuBackend backend{1};
  std::unique_ptr<KvCache> cache;
  StatsCache(int pages, int P, int L) {
    KvCacheConfig kc;
    kc.n_layers = 1;
    kc.n_heads = 2;
    kc.n_kv_heads = 1;
    kc.head_dim = kD;
    kc.num_pages = pages;
    kc.num_sel_slots = 1;
    kc.sparse.page_size = P;
    kc.sparse.logical_page_size = L;
    kc.sparse.token_budget = 2 * P;
    kc.sparse.selector_skip_layers = 0;
    cache = std::make_unique<KvCache>(backend, kc, HeadMap::all_retrieval(1, 1));
  }
  // Appends keys (no RoPE effect: theta so large every angle is ~0 is not exact, so keys are
  // read back from the cache instead of assumed).
  void append(const std::vector<std::vector<float>>& keys, int start_pos,
              std::vector<int32_t> pages) {
    StepPlan plan;
    SeqStep s;
    s.q_len = static_cast<int32_t>(keys.size());
    s.start_pos = start_pos;
    plan.seqs.push_back(s);
    for (size_t i = 0; i < keys.size(); ++i) {
      plan.token_ids.push_back(0);
      plan.positions.push_back(0);  // position 0: RoPE is the identity
    }
    plan.page_indptr = {0, static_cast<int32_t>(pages.size())};
    plan.page_indices = pages;
    plan.stream_indptr = {0, 0};
    std::vector<float> kf, qf(keys.size() * 2 * kD, 0.0f);
    for (const auto& k : keys) kf.insert(kf.end(), k.begin(), k.end());
    Tensor q = backend.upload(qf.data(), static_cast<int64_t>(keys.size()), 2 * kD);
    Tensor k = backend.upload(kf.data(), static_cast<int64_t>(keys.size()), kD);
    Tensor v = backend.upload(kf.data(), static_cast<int64_t>(keys.size()), kD);
    RopeParams rope;
    backend.rope_append_kv(0, q, k, v, rope, plan, *cache);
  }
  const float* kmin(int page, int lp) {
    return cache->kmin(0).as<float>() +
           (static_cast<int64_t>(page) * cache->logical_pages_per_page() + lp) * kD;
  }
  const float* kmax(int page, int lp) {
    return cache->kmax(0).as<float>() +
           (static_cast<int64_t>(page) * cache->logical_pages_per_page() + lp) * kD;
  }
};

std::vector<std::vector<float>> random_keys(int n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<std::vector<float>> keys(n, std::vector<float>(kD));
  for (auto& k : keys) {
    for (auto& x : k) x = dist(rng);
  }
  return keys;
}

TEST(KvStats, PartialLogicalPageBoundsHoldExactlyItsTokens) {
  std::mt19937_64 rng(test::test_seed());
  StatsCache s(4, 16, 4);
  // 11 tokens: logical pages 0, 1 full, logical page 2 holds 3 tokens.
  const auto keys = random_keys(11, rng, 1.0f);
  s.append(keys, 0, {2});
  for (int lp = 0; lp < 3; ++lp) {
    for (int c = 0; c < kD; ++c) {
      float lo = keys[lp * 4][c], hi = lo;
      for (int j = lp * 4; j < std::min(11, lp * 4 + 4); ++j) {
        lo = std::min(lo, keys[j][c]);
        hi = std::max(hi, keys[j][c]);
      }
      ASSERT_EQ(s.kmin(2, lp)[c], lo) << "logical page " << lp;
      ASSERT_EQ(s.kmax(2, lp)[c], hi) << "logical page " << lp;
    }
  }
}

TEST(KvStats, ReusedPageStartsWithFreshStatistics) {
  std::mt19937_64 rng(test::test_seed());
  StatsCache s(2, 16, 8);
  // A first sequence fills page 1 with huge keys...
  s.append(random_keys(16, rng, 1000.0f), 0, {1});
  // ...the page is freed and reused by a sequence with small keys, two tokens so far.
  const auto small = random_keys(2, rng, 0.01f);
  s.append(small, 0, {1});
  for (int c = 0; c < kD; ++c) {
    EXPECT_EQ(s.kmin(1, 0)[c], std::min(small[0][c], small[1][c]));
    EXPECT_EQ(s.kmax(1, 0)[c], std::max(small[0][c], small[1][c]));
  }
}

TEST(KvStats, SelectorPicksPlantedPages) {
  std::mt19937_64 rng(test::test_seed());
  const int P = 16, L = 4, n_blocks = 12;
  StatsCache s(n_blocks, P, L);
  std::vector<int32_t> pages(n_blocks);
  for (int b = 0; b < n_blocks; ++b) pages[b] = (b * 5) % n_blocks;  // scrambled
  auto keys = random_keys(n_blocks * P - 3, rng, 0.1f);
  std::vector<float> q(2 * kD);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& x : q) x = dist(rng);
  // Plant one key aligned with query head 1 in block 3 and one with query head 0 in block 8.
  for (int c = 0; c < kD; ++c) {
    keys[3 * P + 5][c] = 3.0f * q[kD + c];
    keys[8 * P + 9][c] = 3.0f * q[c];
  }
  s.append(keys, 0, pages);
  // Decode one more token with the selector on, budget 3 pages: current + 2 best.
  StepPlan plan;
  SeqStep st;
  st.q_len = 1;
  st.start_pos = static_cast<int32_t>(keys.size());
  st.decode = true;
  st.token_budget = 3 * P;
  st.refresh_selection = true;
  st.sel_slot = 0;
  plan.seqs.push_back(st);
  plan.token_ids = {0};
  plan.positions = {0};
  plan.page_indptr = {0, n_blocks};
  plan.page_indices = pages;
  plan.stream_indptr = {0, 0};
  Tensor qt = s.backend.upload(q.data(), 1, 2 * kD);
  std::vector<float> k1 = random_keys(1, rng, 0.1f)[0];
  Tensor kt = s.backend.upload(k1.data(), 1, kD), vt = s.backend.upload(k1.data(), 1, kD);
  RopeParams rope;
  s.backend.rope_append_kv(0, qt, kt, vt, rope, plan, *s.cache);
  // The budget in the cache config is 2 pages; the plan asks for 3 but is capped at the config.
  s.backend.select_pages(0, qt, plan, *s.cache);
  const int64_t row = s.cache->sel_row(0, 0, 0);
  const int32_t count = s.cache->sel_count().as<int32_t>()[row];
  const int32_t* sel = s.cache->sel_blocks().as<int32_t>() + row * s.cache->max_sel_pages();
  std::vector<int32_t> got(sel, sel + count);
  // Capped at 2 pages: the current block and the best one (block 3 or 8, whichever bound is
  // higher); both planted blocks beat every random one.
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.back(), n_blocks - 1);
  EXPECT_TRUE(got[0] == 3 || got[0] == 8) << got[0];
}

TEST(PageSelection, TopBlocksWithTiesByIndexAndCurrentAlwaysIn) {
  EXPECT_EQ(select_blocks({5, 1, 5, 9, 0}, 2), (std::vector<int32_t>{0, 3, 4}));
  EXPECT_EQ(select_blocks({1, 1, 1, 1}, 2), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(select_blocks({3, 2}, 10), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(select_blocks({7}, 3), (std::vector<int32_t>{0}));
  // The current block is in even when it scores lowest.
  EXPECT_EQ(select_blocks({9, 8, -100}, 1), (std::vector<int32_t>{0, 2}));
}

TEST(PageSelection, QuestBoundIsAnUpperBound) {
  std::mt19937_64 rng(test::test_seed());
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> q(kD), lo(kD, 1e9f), hi(kD, -1e9f);
    std::vector<std::vector<float>> keys(7, std::vector<float>(kD));
    for (auto& x : q) x = dist(rng);
    for (auto& k : keys) {
      for (int c = 0; c < kD; ++c) {
        k[c] = dist(rng);
        lo[c] = std::min(lo[c], k[c]);
        hi[c] = std::max(hi[c], k[c]);
      }
    }
    const float bound = quest_bound(q.data(), lo.data(), hi.data(), kD);
    for (const auto& k : keys) {
      float dot = 0;
      for (int c = 0; c < kD; ++c) dot += q[c] * k[c];
      EXPECT_LE(dot, bound + 1e-4f);
    }
  }
}

// YaRN's attention factor multiplies cos and sin: rotated q and k are the unscaled rotation
// times the factor, at every position (so every q.k score grows by its square).
TEST(Rope, AttentionFactorScalesTheRotation) {
  std::mt19937_64 rng(test::test_seed());
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto rotated = [&](float factor, std::vector<float> q0, std::vector<float> k0) {
    StatsCache s(4, 16, 16);
    StepPlan plan;
    SeqStep st;
    st.q_len = 3;
    st.start_pos = 5;
    plan.seqs.push_back(st);
    for (int i = 0; i < 3; ++i) {
      plan.token_ids.push_back(0);
      plan.positions.push_back(5 + i);
    }
    plan.page_indptr = {0, 1};
    plan.page_indices = {0};
    plan.stream_indptr = {0, 0};
    Tensor q = s.backend.upload(q0.data(), 3, 2 * kD), k = s.backend.upload(k0.data(), 3, kD);
    Tensor v = s.backend.upload(k0.data(), 3, kD);
    RopeParams rope;
    rope.theta = 500.0f;
    rope.attention_factor = factor;
    s.backend.rope_append_kv(0, q, k, v, rope, plan, *s.cache);
    std::vector<float> out(q.as<float>(), q.as<float>() + 3 * 2 * kD);
    out.insert(out.end(), k.as<float>(), k.as<float>() + 3 * kD);
    return out;
  };
  std::vector<float> q0(3 * 2 * kD), k0(3 * kD);
  for (auto& x : q0) x = dist(rng);
  for (auto& x : k0) x = dist(rng);
  const auto plain = rotated(1.0f, q0, k0), scaled = rotated(1.25f, q0, k0);
  ASSERT_EQ(plain.size(), scaled.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(scaled[i], 1.25f * plain[i], 1e-5f) << i;
}

}  // namespace
}  // namespace lserve
