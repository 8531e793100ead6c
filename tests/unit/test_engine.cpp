// The engine on the default model: batching, chunked prefill, preemption, cancellation and stop
// strings must not change what a greedy request produces.
#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "engine/engine.h"
#include "test_util.h"

namespace lserve {
namespace {

std::unique_ptr<Engine> make_engine(const EngineConfig& ec) {
  auto backend = std::make_unique<CpuBackend>(2);
  LoadedModel m =
      load_model(test::source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf", *backend, {});
  return std::make_unique<Engine>(std::move(backend), std::move(m), ec);
}

struct Result {
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;  // of each token, when the request asked for logprobs
  std::string text;
  FinishReason reason = FinishReason::kNone;
};

std::map<int64_t, Result> run_all(Engine& e, const std::vector<Request>& reqs) {
  std::map<int64_t, Result> results;
  std::vector<int64_t> ids;
  for (const auto& r : reqs) ids.push_back(e.submit(r));
  while (e.has_work()) {
    for (const auto& out : e.step()) {
      auto& r = results[out.id];
      r.tokens.insert(r.tokens.end(), out.new_tokens.begin(), out.new_tokens.end());
      for (const auto& lp : out.logprobs) r.logprobs.push_back(lp.logprob);
      r.text += out.new_text;
      if (out.finished) r.reason = out.finish_reason;
    }
  }
  std::map<int64_t, Result> by_index;
  for (size_t i = 0; i < ids.size(); ++i) by_index[static_cast<int64_t>(i)] = results[ids[i]];
  return by_index;
}

std::vector<Request> greedy_requests(const Tokenizer& tok, int max_tokens) {
  const char* prompts[] = {
      "The history of the printing press begins",
      "def quicksort(items):\n",
      "Three facts about octopuses: 1.",
      "In a small village by the sea, there lived an old fisherman who",
      "Q: What is 17 times 23?\nA:",
  };
  std::vector<Request> reqs;
  for (const char* p : prompts) {
    Request r;
    r.prompt = tok.encode(p, false);
    r.params.temperature = 0;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    reqs.push_back(r);
  }
  return reqs;
}

TEST(Engine, BatchedChunkedAndPreemptedRunsMatchSoloRuns) {
  EngineConfig base;
  base.num_pages = 64;
  base.sparse.page_size = 16;
  auto solo_engine = make_engine(base);
  const auto reqs = greedy_requests(solo_engine->tokenizer(), 12);
  std::vector<Result> solo;
  for (const auto& r : reqs) solo.push_back(run_all(*solo_engine, {r})[0]);

  // All at once, with 5-token prefill chunks.
  EngineConfig chunked = base;
  chunked.scheduler.max_num_batched_tokens = 5;
  auto batch_engine = make_engine(chunked);
  auto batched = run_all(*batch_engine, reqs);

  // A pool too small for all five: sequences get preempted and recomputed.
  EngineConfig tiny = base;
  tiny.num_pages = 5;
  auto tiny_engine = make_engine(tiny);
  auto preempted = run_all(*tiny_engine, reqs);
  EXPECT_GT(tiny_engine->stats().preemptions, 0);

  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_EQ(solo[i].tokens.size(), 12u);
    EXPECT_EQ(batched[i].tokens, solo[i].tokens) << "request " << i;
    EXPECT_EQ(preempted[i].tokens, solo[i].tokens) << "request " << i;
    EXPECT_EQ(batched[i].text, solo[i].text);
    EXPECT_EQ(solo[i].reason, FinishReason::kLength);
  }
  EXPECT_EQ(tiny_engine->blocks().pool().num_used(), 0);
  EXPECT_EQ(batch_engine->blocks().pool().num_used(), 0);
}

// Prefix caching must give exactly what recomputation gives: questions about one document in
// turn (the document's pages reused, with streaming heads whose windows are small enough that
// most of its streaming pages left the window), the same prompt twice, and all of them at once
// in a pool so small that sequences are preempted and re-admitted through the cache.
TEST(Engine, PrefixCachingGivesTheTokensOfRecomputation) {
  EngineConfig base;
  base.num_pages = 96;
  base.num_stream_pages = 96;
  base.sparse.page_size = 16;
  base.sparse.sink_tokens = 16;
  base.sparse.prefill_local_tokens = 64;
  base.sparse.local_tokens = 32;
  base.sparse.token_budget = 64;
  auto plain = make_engine(base);
  EngineConfig with_cache = base;
  with_cache.scheduler.enable_prefix_caching = true;
  auto cached = make_engine(with_cache);
  ASSERT_GT(cached->blocks().stream_pool().num_pages(), 0)
      << "the model's pattern has streaming heads";

  std::string doc = "Inventory of the warehouse.\n";
  const char* colors[] = {"red", "green", "blue", "yellow", "black", "white"};
  for (int i = 0; i < 24; ++i) {
    doc += "Shelf " + std::to_string(i) + " holds " + std::to_string(7 * i + 3) + " " +
           colors[i % 6] + " boxes.\n";
  }
  const Tokenizer& tok = plain->tokenizer();
  std::vector<Request> reqs;
  for (const char* q : {"How many boxes are on shelf 5?", "Which color are the boxes on shelf 11?",
                        "How many boxes are on shelf 5?"}) {
    Request r;
    r.prompt = tok.encode(doc + "Question: " + q + "\nAnswer:", false);
    r.params.temperature = 0;
    r.params.max_tokens = 10;
    r.params.ignore_eos = true;
    r.params.logprobs = 0;
    reqs.push_back(r);
  }
  ASSERT_GT(reqs[0].prompt.size(), 200u);
  // Reused KV equals recomputed KV up to the order of f32 sums (a different chunking): the
  // sampled tokens' logprobs agree far more closely than a missing key or a wrong page would
  // allow.
  auto expect_same = [](const Result& got, const Result& want, size_t i) {
    EXPECT_EQ(got.tokens, want.tokens) << "request " << i;
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << "request " << i;
    for (size_t t = 0; t < want.logprobs.size(); ++t) {
      EXPECT_NEAR(got.logprobs[t], want.logprobs[t], 1e-4) << "request " << i << " token " << t;
    }
  };

  for (size_t i = 0; i < reqs.size(); ++i) {
    const Result want = run_all(*plain, {reqs[i]})[0];
    const int64_t hits_before = cached->prefix_cache_stats().hits;
    const Result got = run_all(*cached, {reqs[i]})[0];
    expect_same(got, want, i);
    if (i > 0) {
      EXPECT_GT(cached->prefix_cache_stats().hits - hits_before, 160) << "request " << i;
    }
  }
  EXPECT_EQ(cached->prefix_cache_stats().hits % 16, 0);
  EXPECT_EQ(cached->blocks().pool().num_used(), 0);
  EXPECT_GT(cached->blocks().pool().num_cached(), 0);

  // All three at once, 32-token chunks, in a pool where they cannot all fit. A preempted
  // sequence recomputes its generated tokens as prompt, which sparse windows this small would
  // see differently than its decode steps did: here they hold whole sequences, so preemption
  // itself changes nothing and only the cache's part is tested.
  EngineConfig roomy = base;
  roomy.sparse.prefill_local_tokens = 1024;
  roomy.sparse.local_tokens = 1024;
  roomy.sparse.token_budget = 1024;
  auto reference = make_engine(roomy);
  EngineConfig tiny = roomy;
  tiny.scheduler.enable_prefix_caching = true;
  tiny.num_pages = 24;
  tiny.num_stream_pages = 24;
  tiny.scheduler.max_num_batched_tokens = 32;
  auto small = make_engine(tiny);
  const auto together = run_all(*small, reqs);
  EXPECT_GT(small->stats().preemptions, 0);
  EXPECT_GT(small->prefix_cache_stats().hits, 0);
  for (size_t i = 0; i < reqs.size(); ++i) {
    expect_same(together.at(static_cast<int64_t>(i)), run_all(*reference, {reqs[i]})[0], i);
  }
  EXPECT_EQ(small->blocks().pool().num_used(), 0);
  EXPECT_EQ(small->blocks().stream_pool().num_used(), 0);
}

TEST(Engine, StopStringEndsTheTextBeforeIt) {
  EngineConfig ec;
  ec.num_pages = 32;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  Request r = greedy_requests(e->tokenizer(), 30)[3];
  const Result full = run_all(*e, {r})[0];
  ASSERT_GT(full.text.size(), 20u);
  // A stop string taken from the middle of the unconstrained output.
  const std::string stop = full.text.substr(full.text.size() / 2, 4);
  r.params.stop = {stop, "string that never appears"};
  const Result cut = run_all(*e, {r})[0];
  EXPECT_EQ(cut.reason, FinishReason::kStop);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
}

TEST(Engine, CancelFreesPagesAndReports) {
  EngineConfig ec;
  ec.num_pages = 32;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  auto reqs = greedy_requests(e->tokenizer(), 100);
  const int64_t a = e->submit(reqs[0]);
  const int64_t b = e->submit(reqs[1]);
  e->step();
  e->step();
  EXPECT_GT(e->blocks().pool().num_used(), 0);
  EXPECT_TRUE(e->cancel(a));
  EXPECT_FALSE(e->cancel(a));
  bool saw_cancel = false;
  for (const auto& out : e->step()) {
    if (out.id == a) {
      saw_cancel = true;
      EXPECT_TRUE(out.finished);
      EXPECT_EQ(out.finish_reason, FinishReason::kCancelled);
    }
  }
  EXPECT_TRUE(saw_cancel);
  EXPECT_TRUE(e->cancel(b));
  e->step();
  EXPECT_EQ(e->blocks().pool().num_used(), 0);
  EXPECT_FALSE(e->has_work());
}

TEST(Engine, RejectsImpossibleRequests) {
  EngineConfig ec;
  ec.num_pages = 4;
  ec.sparse.page_size = 16;
  auto e = make_engine(ec);
  EXPECT_EQ(e->max_model_len(), 64);  // limited by the pool
  Request r;
  EXPECT_THROW(e->submit(r), Error);  // empty prompt
  r.prompt.assign(64, 1);
  EXPECT_THROW(e->submit(r), Error);  // no room for one generated token
  r.prompt.assign(10, 1);
  r.params.top_p = 0;
  EXPECT_THROW(e->submit(r), Error);
  r.params.top_p = 1;
  r.prompt = {1, 2, 999999};
  EXPECT_THROW(e->submit(r), Error);
  EXPECT_FALSE(e->has_work());  // nothing was queued
}

}  // namespace
}  // namespace lserve
