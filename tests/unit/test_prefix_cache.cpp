// Prefix caching without a model: the page pool's references and cache, the BlockManager's block
// identities and reuse rules (with and without streaming heads), and the scheduler's admission.
#include <gtest/gtest.h>

#include <climits>
#include <numeric>
#include <random>

#include "engine/scheduler.h"
#include "kv/block_manager.h"
#include "kv/page_pool.h"
#include "test_util.h"

namespace lserve {
namespace {

constexpr PageHash kA{1, 2}, kB{3, 4};

TEST(PagePoolCache, ReleasedPagesWithContentStayFindableUntilEvicted) {
  PagePool pool(3);
  const int32_t a = pool.allocate_one(), b = pool.allocate_one();
  pool.set_hash(a, kA);
  pool.set_hash(b, kB);
  pool.release_one(a);
  pool.release_one(b);
  EXPECT_EQ(pool.num_used(), 0);
  EXPECT_EQ(pool.num_cached(), 2);
  EXPECT_EQ(pool.num_free(), 1);
  EXPECT_TRUE(pool.can_allocate(3));
  EXPECT_EQ(pool.find(kA), a);
  EXPECT_EQ(pool.find(PageHash{1, 99}), -1) << "the second half of the hash must match too";

  // Free pages go first, then the least recently released cached page (a).
  const int32_t c = pool.allocate_one();
  EXPECT_NE(c, a);
  EXPECT_NE(c, b);
  EXPECT_EQ(pool.allocate_one(), a);
  EXPECT_EQ(pool.find(kA), -1) << "an evicted page's content is forgotten";
  EXPECT_EQ(pool.find(kB), b);

  // Reusing a cached page takes it out of the cache; a second reference keeps it in use.
  pool.acquire(b);
  pool.acquire(b);
  EXPECT_EQ(pool.num_cached(), 0);
  EXPECT_EQ(pool.refs(b), 2);
  pool.release_one(b);
  EXPECT_EQ(pool.num_cached(), 0);
  pool.release_one(b);
  EXPECT_EQ(pool.num_cached(), 1);
  EXPECT_THROW(pool.release_one(b), std::exception) << "no reference left to drop";
}

TEST(PagePoolCache, ContentIsRegisteredOncePerHash) {
  PagePool pool(2);
  const int32_t a = pool.allocate_one(), b = pool.allocate_one();
  pool.set_hash(a, kA);
  pool.set_hash(b, kA);  // the same content computed twice: the first page keeps it
  EXPECT_EQ(pool.find(kA), a);
  pool.release_one(b);
  EXPECT_EQ(pool.num_free(), 1) << "a page without registered content is simply freed";
  pool.release_one(a);
  EXPECT_EQ(pool.num_cached(), 1);
}

std::vector<int32_t> random_tokens(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> d(0, 50000);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Grows kv over `tokens` in chunks as the scheduler does (trim, grow, write, register).
void prefill(BlockManager& bm, SequenceKv& kv, const std::vector<int32_t>& tokens, int32_t window,
             int32_t chunk, uint64_t salt = 0) {
  while (kv.num_tokens < static_cast<int32_t>(tokens.size())) {
    const int32_t n = std::min<int32_t>(chunk, static_cast<int32_t>(tokens.size()) - kv.num_tokens);
    bm.trim_window(kv, kv.num_tokens, window);
    bm.grow(kv, kv.num_tokens + n);
    kv.num_tokens += n;
    bm.register_full_blocks(kv, tokens, static_cast<int32_t>(tokens.size()), salt);
  }
}

TEST(BlockManagerPrefix, ReusesTheLongestRegisteredRunOfWholeBlocks) {
  std::mt19937 rng(test::test_seed());
  BlockManagerConfig bc;
  bc.page_size = 16;
  bc.num_pages = 40;
  BlockManager bm(bc);
  const auto doc = random_tokens(16 * 5 + 7, rng);  // 5 whole blocks and a partial one
  SequenceKv first;
  prefill(bm, first, doc, INT_MAX, 20);
  EXPECT_EQ(first.block_hashes.size(), 5u);
  const std::vector<int32_t> pages = first.pages;
  bm.release(first);
  EXPECT_EQ(bm.pool().num_cached(), 5);

  // The same document and a question: the five blocks come back, the same pages.
  auto asked = doc;
  for (int i = 0; i < 30; ++i) asked.push_back(i);
  SequenceKv second;
  EXPECT_EQ(bm.reuse_prefix(second, asked, static_cast<int32_t>(asked.size()) - 1, INT_MAX, 0), 80);
  EXPECT_EQ(second.num_tokens, 80);
  EXPECT_EQ(std::vector<int32_t>(pages.begin(), pages.begin() + 5), second.pages);
  EXPECT_EQ(bm.pool().num_cached(), 0);
  EXPECT_EQ(second.block_hashes.size(), 5u);
  // Its own blocks continue the chain: after growing, block 5 registers on top of the reused 0-4.
  bm.grow(second, 96);
  second.num_tokens = 96;
  bm.register_full_blocks(second, asked, static_cast<int32_t>(asked.size()), 0);
  EXPECT_EQ(second.block_hashes, bm.block_hashes(asked, 6, 0));
  bm.release(second);

  // At most max_tokens: the last prompt token is always computed.
  SequenceKv capped;
  EXPECT_EQ(bm.reuse_prefix(capped, doc, 16 * 3 + 5, INT_MAX, 0), 48);
  bm.release(capped);

  // A different token in block 2 ends the run there; another salt finds nothing.
  auto changed = asked;
  changed[16 * 2 + 3] += 1;
  SequenceKv third;
  EXPECT_EQ(bm.reuse_prefix(third, changed, 100, INT_MAX, 0), 32);
  bm.release(third);
  SequenceKv other_salt;
  EXPECT_EQ(bm.reuse_prefix(other_salt, asked, 100, INT_MAX, 1), 0);
  EXPECT_TRUE(other_salt.pages.empty());
  // Six blocks are cached now. Aligned to 64 tokens (the run of six pages is cut to four), to 40
  // (lcm 80: five pages), to 128 (eight pages: none).
  SequenceKv aligned;
  EXPECT_EQ(bm.reuse_prefix(aligned, asked, 100, INT_MAX, 0, 64), 64);
  EXPECT_EQ(aligned.pages.size(), 4u);
  bm.release(aligned);
  SequenceKv by_80;
  EXPECT_EQ(bm.reuse_prefix(by_80, asked, 100, INT_MAX, 0, 40), 80);
  bm.release(by_80);
  SequenceKv too_long;
  EXPECT_EQ(bm.reuse_prefix(too_long, asked, 100, INT_MAX, 0, 128), 0);
  EXPECT_TRUE(too_long.pages.empty());
}

TEST(BlockManagerPrefix, CachedPagesAreEvictedLastBlockFirst) {
  std::mt19937 rng(test::test_seed());
  BlockManagerConfig bc;
  bc.page_size = 8;
  bc.num_pages = 6;
  BlockManager bm(bc);
  const auto doc = random_tokens(8 * 4, rng);
  SequenceKv kv;
  prefill(bm, kv, doc, INT_MAX, 32);
  bm.release(kv);
  // Two fresh pages take the two free ones, one more evicts the cached tail (block 3).
  SequenceKv other;
  bm.grow(other, 8 * 3);
  SequenceKv again;
  EXPECT_EQ(bm.reuse_prefix(again, doc, 8 * 4, INT_MAX, 0), 24) << "blocks 0-2 are still cached";
}

TEST(BlockManagerPrefix, StreamingHeadsNeedTheirSinkAndWindowBlocks) {
  std::mt19937 rng(test::test_seed());
  BlockManagerConfig bc;
  bc.page_size = 16;
  bc.num_pages = 64;
  bc.num_stream_pages = 64;
  bc.sink_tokens = 16;  // one sink block
  BlockManager bm(bc);
  constexpr int32_t kWindow = 40;  // a query at position q sees [q - 39, q]
  const auto doc = random_tokens(16 * 10, rng);
  SequenceKv first;
  prefill(bm, first, doc, kWindow, 24);
  // While prefilling, blocks that left the window went back to the pool, but cached.
  EXPECT_GT(bm.stream_pool().num_cached(), 0);
  bm.release(first);

  SequenceKv second;
  ASSERT_EQ(bm.reuse_prefix(second, doc, 16 * 10, kWindow, 0), 160);
  // A query at 160 sees from 121: blocks 7..9 and the sink block 0.
  EXPECT_EQ(second.sink_pages.size(), 1u);
  EXPECT_EQ(second.window_first, 7);
  EXPECT_EQ(second.window_pages.size(), 3u);
  EXPECT_EQ(second.pages.size(), 10u);
  bm.release(second);

  // Evict cached streaming pages, least recently released first, until block 8's is gone: a run
  // is reused only if every sink and window block its next query sees is still cached.
  {
    const PageHash h8 = bm.block_hashes(doc, 9, 0)[8];
    PagePool& sp = const_cast<PagePool&>(bm.stream_pool());
    const int32_t page = sp.find(h8);
    ASSERT_GE(page, 0);
    std::vector<int32_t> taken;
    while (sp.find(h8) >= 0) taken.push_back(sp.allocate_one());
    sp.release(taken);
  }
  SequenceKv third;
  const int32_t reused = bm.reuse_prefix(third, doc, 16 * 10, kWindow, 0);
  EXPECT_LT(reused, 16 * 9);
  if (reused > 0) {
    const int32_t n = reused / 16;
    const int32_t first_block = std::max(1, (n * 16 - kWindow + 1) / 16);
    EXPECT_EQ(third.window_first, first_block);
    EXPECT_EQ(static_cast<int32_t>(third.window_pages.size()), n - first_block);
    for (int32_t p : third.window_pages) EXPECT_GE(p, 0);
  }
  bm.release(third);
}

Sequence make_seq(int64_t id, std::vector<int32_t> tokens) {
  Sequence s;
  s.id = id;
  s.prompt_len = static_cast<int32_t>(tokens.size());
  s.tokens = std::move(tokens);
  return s;
}

TEST(SchedulerPrefix, AdmissionSkipsTheCachedPrefixAndCountsIt) {
  std::mt19937 rng(test::test_seed());
  BlockManagerConfig bc;
  bc.page_size = 16;
  bc.num_pages = 32;
  BlockManager bm(bc);
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 512;
  sc.enable_prefix_caching = true;
  SparseAttentionConfig sparse;
  sparse.dense = true;
  Scheduler sched(sc, sparse, bm);

  const auto doc = random_tokens(100, rng);
  Sequence a = make_seq(1, doc);
  sched.add(&a);
  ScheduledStep s1 = sched.schedule();
  ASSERT_EQ(s1.plan.seqs.size(), 1u);
  EXPECT_EQ(s1.plan.seqs[0].start_pos, 0);
  a.kv.num_tokens = 100;  // what the engine does after the step
  bm.register_full_blocks(a.kv, a.tokens, a.prompt_len, a.kv_salt());
  sched.remove(&a);

  auto asked = doc;
  asked.insert(asked.end(), {7, 8, 9});
  Sequence b = make_seq(2, asked);
  sched.add(&b);
  ScheduledStep s2 = sched.schedule();
  ASSERT_EQ(s2.plan.seqs.size(), 1u);
  EXPECT_EQ(s2.plan.seqs[0].start_pos, 96) << "six whole blocks of the document were cached";
  EXPECT_EQ(s2.plan.seqs[0].q_len, 7);
  EXPECT_EQ(sched.prefix_cache_stats().queries, 100 + 103);
  EXPECT_EQ(sched.prefix_cache_stats().hits, 96);

  // A dense-override sequence has another salt: nothing is shared with it.
  Sequence c = make_seq(3, asked);
  c.sparse.dense = true;
  sched.add(&c);
  ScheduledStep s3 = sched.schedule();
  bool found = false;
  for (const auto& s : s3.plan.seqs) {
    if (s.seq_id == 3) {
      EXPECT_EQ(s.start_pos, 0);
      found = true;
    }
  }
  EXPECT_TRUE(found);
}

// Dynamic prefill sparsity: a sequence's prefill chunks end on 128-token query blocks where the
// budget holds one (the prompt's end is one), cached prefixes are reused in whole blocks, the
// dense tail starts prefill_dense_tail positions before the prompt's end, and a dense-override
// sequence is neither aligned nor sparse.
TEST(SchedulerPrefillBlocks, ChunksAndReusedPrefixesEndOnQueryBlocks) {
  std::mt19937 rng(test::test_seed());
  BlockManagerConfig bc;
  bc.page_size = 16;
  bc.num_pages = 200;
  BlockManager bm(bc);
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 300;
  sc.enable_prefix_caching = true;
  SparseAttentionConfig sparse;
  sparse.static_sparsity = 0;  // no streaming heads: only the retrieval pool
  sparse.prefill_sparsity = 0.5;
  sparse.prefill_estimate = PrefillEstimate::kSampledRows;
  sparse.prefill_dense_tail = 150;
  Scheduler sched(sc, sparse, bm);

  auto run_prompt = [&](Sequence& seq) {
    std::vector<SeqStep> steps;
    sched.add(&seq);
    while (seq.kv.num_tokens < seq.prompt_len) {
      ScheduledStep st = sched.schedule();
      EXPECT_EQ(st.plan.seqs.size(), 1u);
      if (st.plan.seqs.size() != 1u) break;
      steps.push_back(st.plan.seqs[0]);
      seq.kv.num_tokens = st.plan.seqs[0].end_pos();
    }
    bm.register_full_blocks(seq.kv, seq.tokens, seq.prompt_len, seq.kv_salt());
    sched.remove(&seq);
    return steps;
  };
  const auto doc = random_tokens(700, rng);
  Sequence a = make_seq(1, doc);
  const auto steps = run_prompt(a);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0].q_len, 256);
  EXPECT_EQ(steps[1].end_pos(), 512);
  EXPECT_EQ(steps[2].end_pos(), 700);
  for (const SeqStep& s : steps) {
    EXPECT_EQ(s.prefill_sparsity, 0.5);
    EXPECT_EQ(s.prefill_dense_from, 550);
    EXPECT_EQ(s.prefill_threshold(549), 0.5);
    EXPECT_EQ(s.prefill_threshold(550), 1.0);
  }

  // The document again with a question: 43 cached pages (688 tokens), reused down to 640.
  auto asked = doc;
  asked.insert(asked.end(), {5, 6, 7});
  Sequence b = make_seq(2, asked);
  const auto again = run_prompt(b);
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(again[0].start_pos, 640);

  // A dense-override sequence: the unaligned budget, no prefill sparsity.
  Sequence c = make_seq(3, random_tokens(700, rng));
  c.sparse.dense = true;
  const auto dense = run_prompt(c);
  ASSERT_FALSE(dense.empty());
  EXPECT_EQ(dense[0].q_len, 300);
  EXPECT_EQ(dense[0].prefill_sparsity, 0.0);
  EXPECT_EQ(dense[0].prefill_dense_from, INT_MAX);
}

}  // namespace
}  // namespace lserve
