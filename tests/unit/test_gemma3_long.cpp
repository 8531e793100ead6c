// Gemma 3 270M at a long context (slow tier): an 8K-token prompt (LSERVE_GEMMA3_LONG_TOKENS, up to
// the model's 32K) through the engine, dense and sparse. Dense must give the tokens and logprobs
// of the offline chunked reference (sequence_logits); sparse must complete, agreeing on the first
// token (its prefill is dense for the global layers, and windowed layers are exact in both).
// Skipped, saying so, when the model file is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "engine/offline.h"
#include "model_test_util.h"

namespace lserve {
namespace {

int long_tokens() {
  const char* e = std::getenv("LSERVE_GEMMA3_LONG_TOKENS");
  return e != nullptr ? std::clamp(std::atoi(e), 1024, 32700) : 8192;
}

TEST(Gemma3Long, DenseMatchesTheChunkedReferenceAndSparseCompletes) {
  LSERVE_SKIP_WITHOUT_GEMMA3();
  const int n = long_tokens();
  EngineConfig ec;
  ec.sparse.page_size = 64;
  ec.sparse.logical_page_size = 16;
  ec.sparse.token_budget = 2048;
  ec.kv_cache_bytes = int64_t{768} << 20;
  auto backend = std::make_unique<CpuBackend>(2);
  LoadedModel lm = load_model(test::gemma3_path(), *backend, {});
  Engine sparse(std::move(backend), std::move(lm), ec);
  const Tokenizer& tok = sparse.tokenizer();

  // Filler with a fact at a third of the way and a question at the end.
  std::string text;
  int i = 0;
  const std::string filler =
      "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
      "again. ";
  while (static_cast<int>(tok.encode(text, false).size()) < n - 64) {
    text += i == 40 ? "The pass key is 71432. Remember it. 71432 is the pass key. " : filler;
    text += filler;
    ++i;
  }
  text += "What is the pass key? The pass key is";
  std::vector<int32_t> prompt = tok.encode(text, false, tok.add_bos());
  ASSERT_LT(prompt.size(), static_cast<size_t>(sparse.max_model_len()));
  std::printf("gemma3 long: %zu prompt tokens\n", prompt.size());

  constexpr int kSteps = 4;
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  const auto sp = test::greedy_logprobs(sparse, prompt, kSteps);
  const double sparse_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(sp.size(), static_cast<size_t>(kSteps));

  EngineConfig dc = ec;
  dc.sparse.dense = true;
  auto backend2 = std::make_unique<CpuBackend>(2);
  LoadedModel lm2 = load_model(test::gemma3_path(), *backend2, {});
  Engine dense(std::move(backend2), std::move(lm2), dc);
  t0 = Clock::now();
  const auto de = test::greedy_logprobs(dense, prompt, kSteps);
  const double dense_s = std::chrono::duration<double>(Clock::now() - t0).count();
  ASSERT_EQ(de.size(), static_cast<size_t>(kSteps));

  // The reference for the first token: one offline run, 512-token chunks, in-order pages.
  auto backend3 = std::make_unique<CpuBackend>(2);
  LoadedModel lm3 = load_model(test::gemma3_path(), *backend3, {});
  auto model = make_model(lm3.config, std::move(lm3.weights));
  OfflineRunOptions o;
  o.all_logits = false;
  o.chunk = 512;
  o.page_size = 64;
  t0 = Clock::now();
  const auto best = test::greedy_pick(sequence_logits(*model, *backend3, prompt, o));
  const double ref_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf(
      "gemma3 long: sparse %.1f s, dense %.1f s, reference prefill %.1f s; dense tokens '%s', "
      "sparse '%s'\n",
      sparse_s, dense_s, ref_s,
      tok.decode(std::vector<int32_t>{de[0].token, de[1].token, de[2].token, de[3].token}).c_str(),
      tok.decode(std::vector<int32_t>{sp[0].token, sp[1].token, sp[2].token, sp[3].token}).c_str());
  EXPECT_EQ(de[0].token, best.token);
  // f32 on both sides; only the chunking and summation order differ.
  EXPECT_NEAR(de[0].logprob, best.logprob, 2e-3);
  EXPECT_EQ(sp[0].token, de[0].token);
  EXPECT_NEAR(sp[0].logprob, de[0].logprob, 2e-3);
}

}  // namespace
}  // namespace lserve
