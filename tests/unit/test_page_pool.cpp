#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "core/error.h"
#include "kv/block_manager.h"
#include "kv/page_pool.h"

namespace lserve {
namespace {

TEST(PagePool, AllocatesDistinctPagesAndRefusesWhenEmpty) {
  PagePool pool(5);
  EXPECT_TRUE(pool.can_allocate(5));
  EXPECT_FALSE(pool.can_allocate(6));
  auto a = pool.allocate(3);
  auto b = pool.allocate(2);
  std::set<int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  EXPECT_EQ(all.size(), 5u);
  EXPECT_EQ(pool.num_free(), 0);
  EXPECT_THROW(pool.allocate(1), OutOfMemoryError);
  pool.release(a);
  EXPECT_EQ(pool.num_free(), 3);
  EXPECT_EQ(pool.num_used(), 2);
}

TEST(PagePool, FailedAllocationChangesNothing) {
  PagePool pool(4);
  auto a = pool.allocate(3);
  EXPECT_THROW(pool.allocate(2), OutOfMemoryError);
  EXPECT_EQ(pool.num_free(), 1);
}

TEST(PagePool, DoubleFreeIsAnError) {
  PagePool pool(3);
  auto a = pool.allocate(1);
  pool.release(a);
  EXPECT_THROW(pool.release(a), Error);
  EXPECT_THROW(pool.release_one(7), Error);
}

TEST(PagePool, RandomWorkloadKeepsAccounting) {
  const auto seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937 rng(seed);
  PagePool pool(97);
  std::vector<std::vector<int32_t>> held;
  int used = 0;
  for (int step = 0; step < 2000; ++step) {
    if (!held.empty() && rng() % 2 == 0) {
      const size_t i = rng() % held.size();
      used -= static_cast<int>(held[i].size());
      pool.release(held[i]);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      const int n = 1 + static_cast<int>(rng() % 9);
      if (pool.can_allocate(n)) {
        held.push_back(pool.allocate(n));
        used += n;
      }
    }
    ASSERT_EQ(pool.num_used(), used);
  }
  std::set<int32_t> ids;
  for (auto& h : held) ids.insert(h.begin(), h.end());
  EXPECT_EQ(static_cast<int>(ids.size()), used);
}

TEST(BlockManager, GrowsByWholePagesAndReleases) {
  BlockManagerConfig bc;
  bc.page_size = 16;
  bc.num_pages = 10;
  BlockManager bm(bc);
  SequenceKv kv;
  EXPECT_EQ(bm.pages_needed(kv, 1), 1);
  EXPECT_EQ(bm.pages_needed(kv, 16), 1);
  EXPECT_EQ(bm.pages_needed(kv, 17), 2);
  bm.grow(kv, 33);
  EXPECT_EQ(kv.pages.size(), 3u);
  EXPECT_EQ(bm.pages_needed(kv, 48), 0);
  EXPECT_FALSE(bm.can_grow(kv, 16 * 11));
  EXPECT_THROW(bm.grow(kv, 16 * 11), OutOfMemoryError);
  EXPECT_EQ(kv.pages.size(), 3u);
  bm.release(kv);
  EXPECT_EQ(bm.pool().num_free(), 10);
  EXPECT_TRUE(kv.pages.empty());
}

}  // namespace
}  // namespace lserve
