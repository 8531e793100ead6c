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
  LoadedModel m = load_model(test::source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                             *backend, {});
  return std::make_unique<Engine>(std::move(backend), std::move(m), ec);
}

struct Result {
  std::vector<int32_t> tokens;
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
