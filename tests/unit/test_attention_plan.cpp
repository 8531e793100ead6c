// The host planner of GPU attention (backend/attention_plan.h), checked without a GPU: through the
// real scheduler, every (sequence, query head, query) must be covered by exactly one work item
// per key it may see — none missing (wrong output) and none twice (double weight after a split).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "backend/attention_plan.h"
#include "engine/scheduler.h"
#include "test_util.h"

namespace lserve {
namespace {

// The CPU mirror of the kernel's KeyMap::locate for the kinds the host fully determines.
int32_t locate(const StepPlan& plan, size_t s, int32_t kind, int32_t k, int P) {
  const SeqStep& seq = plan.seqs[s];
  const int32_t li = k / P;
  int32_t block = li;
  if (kind == cuda::kStreamPages) {
    const int32_t n_stream = plan.stream_indptr[s + 1] - plan.stream_indptr[s];
    if (li >= n_stream) return -1;
    block = li < seq.stream_sink_blocks ? li
                                        : seq.stream_window_first + (li - seq.stream_sink_blocks);
  }
  const int32_t pos = block * P + k % P;
  return pos < seq.end_pos() ? pos : -1;
}

TEST(AttentionPlan, EveryVisibleKeyIsCoveredExactlyOnce) {
  std::mt19937_64 rng(test::test_seed());
  SparseAttentionConfig sp;
  sp.sink_tokens = 5;
  sp.local_tokens = 37;
  sp.prefill_local_tokens = 90;
  sp.page_size = 16;
  sp.logical_page_size = 4;
  sp.token_budget = 1024;  // above every context here: retrieval heads stay dense (kind 0)
  const int n_heads = 8, n_kv = 2, group = 4, P = sp.page_size;
  const std::vector<std::vector<bool>> retrieval = {{true, false}, {false, true}};
  const HeadMap heads = HeadMap::from_flags(retrieval);
  BlockManagerConfig bc;
  bc.page_size = P;
  bc.num_pages = 256;
  bc.num_stream_pages = 256;
  bc.sink_tokens = sp.sink_tokens;
  bc.num_sel_slots = 4;
  BlockManager blocks(bc);
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 61;
  Scheduler sched(sc, sp, blocks);
  std::vector<Sequence> seqs(3);
  for (size_t i = 0; i < seqs.size(); ++i) {
    seqs[i].id = static_cast<int64_t>(i);
    seqs[i].prompt_len = 40 + static_cast<int32_t>(rng() % 120);
    seqs[i].tokens.assign(seqs[i].prompt_len, 0);
    sched.add(&seqs[i]);
  }
  int steps = 0, checked_rows = 0;
  for (; steps < 200; ++steps) {
    ScheduledStep step = sched.schedule();
    if (step.plan.seqs.empty()) break;
    const StepPlan& plan = step.plan;
    for (int layer = 0; layer < 2; ++layer) {
      AttentionPlanConfig cfg;
      cfg.layer = layer;
      cfg.n_heads = n_heads;
      cfg.n_kv_heads = n_kv;
      cfg.num_sms = 3;  // few "SMs": forces splits
      cfg.min_split_keys = 64;
      const AttentionPlan ap = plan_attention(plan, heads, sp, cfg);
      // (seq, head, query index) -> key positions covered, with multiplicity.
      std::map<std::tuple<int, int, int>, std::multiset<int32_t>> covered;
      auto add = [&](const cuda::AttnWork& w) {
        for (int r = 0; r < w.q_count * w.rg; ++r) {
          const int head = w.head0 + r % w.rg, q = w.q_first + r / w.rg;
          auto& keys = covered[{w.seq, head, q}];
          for (int range = 0; range < 2; ++range) {
            for (int32_t k = w.k_begin[range]; k < w.k_end[range]; ++k) {
              const int32_t pos = locate(plan, w.seq, w.kind, k, P);
              if (pos >= 0) keys.insert(pos);
            }
          }
        }
      };
      for (const auto& w : ap.prefill) add(w);
      for (const auto& w : ap.decode) add(w);
      for (size_t s = 0; s < plan.seqs.size(); ++s) {
        const SeqStep& seq = plan.seqs[s];
        for (int head = 0; head < n_heads; ++head) {
          const bool is_retrieval = retrieval[layer][head / group];
          for (int q = 0; q < seq.q_len; ++q) {
            const int32_t i = seq.start_pos + q;
            const auto& keys = covered[{static_cast<int>(s), head, q}];
            for (int32_t j = 0; j <= i; ++j) {
              const bool visible = is_retrieval || j < sp.sink_tokens ||
                                   static_cast<int64_t>(j) > static_cast<int64_t>(i) - seq.stream_window;
              if (!visible) continue;
              ASSERT_EQ(keys.count(j), 1u) << "step " << steps << " layer " << layer << " seq " << s
                                           << " head " << head << " query " << i << " key " << j;
            }
            for (int32_t j : keys) ASSERT_LE(keys.count(j), 1u) << "key " << j << " covered twice";
            ++checked_rows;
          }
        }
      }
    }
    for (size_t i = 0; i < step.seqs.size(); ++i) {
      Sequence* seq = step.seqs[i];
      seq->kv.num_tokens = plan.seqs[i].end_pos();
      if (plan.seqs[i].want_logits) {
        if (seq->num_generated() >= 70) {
          sched.remove(seq);
        } else {
          seq->tokens.push_back(0);
        }
      }
    }
  }
  EXPECT_LT(steps, 200);
  EXPECT_GT(checked_rows, 1000);
}

}  // namespace
}  // namespace lserve
