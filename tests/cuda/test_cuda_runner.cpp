// Decode steps replayed from CUDA graphs compute what directly launched steps compute. The same
// plans run through a ModelRunner that records (device-planned work, batches padded to a bucket)
// and one that never does (host-planned work lists), on one model and one KV cache (re-running a
// decode step rewrites the same KV), and the sampled tokens and their top log-probabilities are
// compared; for random Llamas and for a random Gemma 3 (sliding-window layers, head_dim 256 on the
// reference attention kernel). Skipped, saying why, where no GPU is present.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>

#include "backend/cuda/cuda_backend.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"
#include "engine/step_sampling.h"
#include "gpu_test.h"
#include "test_util.h"

namespace lserve {
namespace {

struct Sampled {
  int32_t token;
  std::vector<float> top;  // top log-probabilities, best first
  std::vector<int32_t> top_ids;
};

std::vector<Sampled> copy(std::span<const SampledToken> s) {
  std::vector<Sampled> out;
  for (const SampledToken& t : s) {
    out.push_back({t.token, std::vector<float>(t.top_logprobs, t.top_logprobs + t.n_top),
                   std::vector<int32_t>(t.top_ids, t.top_ids + t.n_top)});
  }
  return out;
}

TEST(CudaRunner, RecordedDecodeStepsMatchDirectlyLaunchedSteps) {
  LSERVE_SKIP_WITHOUT_GPU();
  const uint64_t seed = test::test_seed();
  std::mt19937_64 rng(seed);
  CudaBackend gpu(0);
  for (auto [gemma, head_dim] :
       {std::pair{false, 64}, std::pair{false, 128}, std::pair{true, 256}, std::pair{true, 64}}) {
    // Gemma 3: layers 0 and 1 slide over 40 tokens, layer 2 is global; one KV head.
    const ModelConfig c =
        gemma ? test::small_gemma3_config(3, head_dim, 40) : test::small_llama_config(3, head_dim);
    auto model = gemma ? test::random_gemma3(gpu, c, rng()) : test::random_llama(gpu, c, rng());

    SparseAttentionConfig sp;
    sp.sink_tokens = 5;
    sp.local_tokens = 70;
    sp.prefill_local_tokens = 150;
    sp.page_size = 16;
    sp.logical_page_size = 4;
    sp.token_budget = 64;
    sp.selector_interval = 3;
    sp.selector_skip_layers = 1;
    const std::vector<std::vector<bool>> retrieval =
        gemma ? std::vector<std::vector<bool>>{{true}, {true}, {true}}
              : std::vector<std::vector<bool>>{{true, false}, {true, true}, {false, true}};
    HeadMap heads = HeadMap::from_flags(retrieval);
    heads.set_model_windows(c.layer_windows);
    KvCacheConfig kc;
    kc.n_layers = c.n_layers;
    kc.n_heads = c.n_heads;
    kc.n_kv_heads = c.n_kv_heads;
    kc.head_dim = c.head_dim;
    kc.num_pages = 256;
    kc.num_stream_pages = 256;
    kc.num_sel_slots = 8;
    kc.sparse = sp;
    // As the engine sets them up (engine.cpp): a sink only for sparse streaming heads, and the
    // streaming pool kept for the longer of the sparse and the model windows.
    BlockManagerConfig bc;
    bc.page_size = sp.page_size;
    bc.num_pages = kc.num_pages;
    bc.num_stream_pages = kc.num_stream_pages;
    bc.sink_tokens = heads.has_sparse_streaming() ? sp.sink_tokens : 0;
    bc.num_sel_slots = kc.num_sel_slots;
    BlockManager blocks(bc);
    SchedulerConfig sc;
    sc.max_num_seqs = 8;
    sc.max_num_batched_tokens = 64;
    sc.model_window = heads.max_model_window();
    sc.sparse_streaming = heads.has_sparse_streaming();
    KvCache cache(gpu, kc, std::move(heads));
    Scheduler sched(sc, sp, blocks);
    RunnerConfig rc;
    rc.max_step_tokens = sc.max_num_batched_tokens;
    rc.max_seqs = sc.max_num_seqs;
    ModelRunner recorded(*model, gpu, cache, rc);
    rc.enforce_eager = true;
    ModelRunner direct(*model, gpu, cache, rc);

    std::vector<Sequence> seqs(3);
    const int lens[] = {150, 97, 201}, outs[] = {30, 12, 25};
    for (size_t i = 0; i < seqs.size(); ++i) {
      Sequence& s = seqs[i];
      s.id = static_cast<int64_t>(i);
      for (int t = 0; t < lens[i]; ++t) s.tokens.push_back(static_cast<int32_t>(rng() % 1000));
      s.prompt_len = lens[i];
      s.params.temperature = 0;
      s.params.logprobs = 5;
      s.params.max_tokens = outs[i];
      s.seed = rng();
      sched.add(&s);
    }
    int compared = 0, near_ties = 0;
    double max_lp_diff = 0;
    for (int steps = 0; steps < 400; ++steps) {
      ScheduledStep step = sched.schedule();
      if (step.plan.seqs.empty()) break;
      add_sampling(step.plan, step.seqs, c.vocab_size);
      const bool decode_only = std::all_of(step.plan.seqs.begin(), step.plan.seqs.end(),
                                           [](const SeqStep& s) { return s.decode; });
      StepPlan again = step.plan;
      const std::vector<Sampled> want = copy(direct.run(step.plan));
      if (decode_only) {
        const std::vector<Sampled> got = copy(recorded.run(again));
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[i].top.size(), 5u);
          for (size_t j = 0; j < 5; ++j) {
            // The two paths split attention differently, so bf16 rounding differs a little.
            max_lp_diff = std::max<double>(max_lp_diff, std::abs(got[i].top[j] - want[i].top[j]));
            EXPECT_NEAR(got[i].top[j], want[i].top[j], 5e-2) << "step " << steps << " row " << i;
          }
          if (want[i].top[0] - want[i].top[1] > 0.1f) {
            EXPECT_EQ(got[i].token, want[i].token) << "step " << steps << " row " << i;
            ++compared;
          } else {
            ++near_ties;
          }
        }
      }
      size_t row = 0;
      for (size_t i = 0; i < step.seqs.size(); ++i) {
        Sequence* s = step.seqs[i];
        s->kv.num_tokens = step.plan.seqs[i].end_pos();
        if (!step.plan.seqs[i].want_logits) continue;
        s->tokens.push_back(want[row++].token);
        ++s->output_counts[s->tokens.back()];
        if (s->num_generated() >= s->params.max_tokens) sched.remove(s);
      }
    }
    const RunnerStats& st = recorded.stats();
    std::printf(
        "%s head_dim %d: %d tokens compared (%d near ties), max logprob diff %.2e; %lld "
        "replayed, %d recordings\n",
        gemma ? "gemma3" : "llama", head_dim, compared, near_ties, max_lp_diff,
        static_cast<long long>(st.replayed_steps), st.recordings);
    SCOPED_TRACE(fmt::format("{} head_dim {}", gemma ? "gemma3" : "llama", head_dim));
    EXPECT_FALSE(sched.has_work());
    EXPECT_GT(compared, 40);
    EXPECT_GE(st.recordings, 3);  // buckets 4 and 2 at least, with and without page selection
    EXPECT_GE(st.replayed_steps, 20);
  }
}

}  // namespace
}  // namespace lserve
