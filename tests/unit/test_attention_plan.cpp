// The host planner of GPU attention (backend/attention_plan.h), checked without a GPU: through the
// real scheduler, every (sequence, query head, query) must be covered by exactly one work item
// per key it may see — none missing (wrong output) and none twice (double weight after a split).
// Also for layers with the model's own sliding window (Gemma 3), whose streaming heads see that
// window and no sink.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "backend/attention_plan.h"
#include "engine/scheduler.h"
#include "sparse/prefill_blocks.h"
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
    block =
        li < seq.stream_sink_blocks ? li : seq.stream_window_first + (li - seq.stream_sink_blocks);
  }
  const int32_t pos = block * P + k % P;
  return pos < seq.end_pos() ? pos : -1;
}

using ItemsFn = std::function<std::vector<cuda::AttnWork>(const StepPlan&, int layer)>;

// Drives three sequences through the real scheduler (chunked prefill, then decoding) and checks,
// at every step and layer, that the work items `items` returns cover each (sequence, query head,
// query) exactly once per key it may see. Returns the rows checked.
int check_coverage(const SparseAttentionConfig& sp, const HeadMap& heads, int n_heads, int n_kv,
                   const ItemsFn& items, bool decode_only) {
  std::mt19937_64 rng(test::test_seed());
  const int group = n_heads / n_kv, P = sp.page_size;
  BlockManagerConfig bc;
  bc.page_size = P;
  bc.num_pages = 256;
  bc.num_stream_pages = 256;
  // As the engine sets them up: only the sparse streaming heads have a sink, and the pool keeps
  // the longer of the two windows.
  bc.sink_tokens = heads.has_sparse_streaming() ? sp.sink_tokens : 0;
  bc.num_sel_slots = 4;
  BlockManager blocks(bc);
  SchedulerConfig sc;
  sc.max_num_batched_tokens = 61;
  sc.model_window = heads.max_model_window();
  sc.sparse_streaming = heads.has_sparse_streaming();
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
    const bool all_decode =
        std::all_of(plan.seqs.begin(), plan.seqs.end(), [](const SeqStep& s) { return s.decode; });
    for (int layer = 0; layer < 2 && (all_decode || !decode_only); ++layer) {
      // (seq, head, query index) -> key positions covered, with multiplicity.
      std::map<std::tuple<int, int, int>, std::multiset<int32_t>> covered;
      for (const cuda::AttnWork& w : items(plan, layer)) {
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
      }
      for (size_t s = 0; s < plan.seqs.size(); ++s) {
        const SeqStep& seq = plan.seqs[s];
        for (int head = 0; head < n_heads; ++head) {
          const bool is_retrieval = heads.cls[layer][head / group] == HeadClass::kRetrieval;
          // The model's window (no sink), or the sparse config's sink + window.
          const int32_t model_window = heads.model_window(layer);
          const int32_t sink = model_window > 0 ? 0 : sp.sink_tokens;
          const int32_t window = model_window > 0 ? model_window : seq.stream_window;
          for (int q = 0; q < seq.q_len; ++q) {
            const int32_t i = seq.start_pos + q;
            const auto& keys = covered[{static_cast<int>(s), head, q}];
            for (int32_t j = 0; j <= i; ++j) {
              const bool visible = is_retrieval || j < sink ||
                                   static_cast<int64_t>(j) > static_cast<int64_t>(i) - window;
              if (!visible) continue;
              EXPECT_EQ(keys.count(j), 1u) << "step " << steps << " layer " << layer << " seq " << s
                                           << " head " << head << " query " << i << " key " << j;
              if (keys.count(j) != 1u) return checked_rows;
            }
            for (int32_t j : keys) EXPECT_LE(keys.count(j), 1u) << "key " << j << " covered twice";
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
  return checked_rows;
}

SparseAttentionConfig coverage_config() {
  SparseAttentionConfig sp;
  sp.sink_tokens = 5;
  sp.local_tokens = 37;
  sp.prefill_local_tokens = 90;
  sp.page_size = 16;
  sp.logical_page_size = 4;
  sp.token_budget = 1024;  // above every context here: retrieval heads stay dense (kind 0)
  return sp;
}

// num_sms 3: few "SMs" force splits; 64: every step's prefill tiles leave most of them idle, so
// chunks of up to 32 tokens (rows of one prefill tile) run as split decode tiles.
int check_host_plan(const SparseAttentionConfig& sp, const HeadMap& heads, int num_sms = 3,
                    int key_tile = 64) {
  return check_coverage(
      sp, heads, 8, 2,
      [&](const StepPlan& plan, int layer) {
        AttentionPlanConfig cfg;
        cfg.layer = layer;
        cfg.n_heads = 8;
        cfg.n_kv_heads = 2;
        cfg.num_sms = num_sms;
        cfg.min_split_keys = 64;
        cfg.decode_key_tile = key_tile;
        const AttentionPlan ap = plan_attention(plan, heads, sp, cfg);
        std::vector<cuda::AttnWork> all = ap.prefill;
        all.insert(all.end(), ap.decode.begin(), ap.decode.end());
        return all;
      },
      false);
}

TEST(AttentionPlan, EveryVisibleKeyIsCoveredExactlyOnce) {
  const HeadMap heads = HeadMap::from_flags({{true, false}, {false, true}});
  EXPECT_GT(check_host_plan(coverage_config(), heads), 1000);
  EXPECT_GT(check_host_plan(coverage_config(), heads, 64), 1000);
  EXPECT_GT(check_host_plan(coverage_config(), heads, 3, 128), 1000);  // FP8 decode tiles
}

// Block-sparse prefill (SeqStep::prefill_sparsity): one estimate per (query block, retrieval KV
// head) of the chunk; that head's tiles stay inside one query block (they share its kept list,
// AttnWork::list) and cover each of its queries once; streaming heads plan as usual; chunks of
// fewer than kSparsePrefillMinQueries queries are dense; blocks whose last query lies in the
// dense tail (SeqStep::prefill_dense_from) keep every key block (threshold 1).
TEST(AttentionPlan, BlockSparsePrefillTilesStayInsideTheirQueryBlock) {
  SparseAttentionConfig sp = coverage_config();
  const HeadMap heads = HeadMap::from_flags({{true, false}});
  for (int32_t start : {0, 256, 300}) {
    StepPlan plan;
    SeqStep seq;
    seq.start_pos = start;
    seq.q_len = 401;
    seq.prefill_sparsity = 0.9;
    seq.prefill_dense_from = start + 300;
    plan.seqs.push_back(seq);
    plan.positions.resize(seq.q_len);
    AttentionPlanConfig cfg;
    cfg.n_heads = 6;  // group 3: 42 queries per 128-row tile, which would straddle blocks
    cfg.n_kv_heads = 2;
    const AttentionPlan ap = plan_attention(plan, heads, sp, cfg);
    const int32_t first = start / kPrefillBlock, last = (start + seq.q_len - 1) / kPrefillBlock;
    ASSERT_EQ(static_cast<int>(ap.prefill_mass.size()), last - first + 1);
    EXPECT_EQ(ap.prefill_max_blocks, last + 1);
    std::vector<int> seen(seq.q_len, 0);
    for (const cuda::AttnWork& w : ap.prefill) {
      if (w.kv_head == 1) {  // the streaming head
        EXPECT_EQ(w.kind, cuda::kStreamPages);
        continue;
      }
      ASSERT_EQ(w.kind, cuda::kKeptBlocks);
      ASSERT_GE(w.list, 0);
      ASSERT_LT(w.list, static_cast<int32_t>(ap.prefill_mass.size()));
      const cuda::PrefillMassItem& m = ap.prefill_mass[w.list];
      EXPECT_EQ(m.kv_head, 0);
      EXPECT_EQ(m.threshold, start + m.r1 - 1 >= start + 300 ? 1.0 : 0.9);
      EXPECT_GE(w.q_first, m.r0);
      EXPECT_LE(w.q_first + w.q_count, m.r1);
      const int32_t qb = (start + m.r0) / kPrefillBlock;
      EXPECT_EQ((start + m.r1 - 1) / kPrefillBlock, qb);
      EXPECT_EQ(w.k_end[0], (qb + 1) * kPrefillBlock);
      for (int32_t q = w.q_first; q < w.q_first + w.q_count; ++q) ++seen[q];
    }
    EXPECT_TRUE(std::all_of(seen.begin(), seen.end(), [](int n) { return n == 1; })) << start;
  }
  StepPlan small;
  SeqStep seq;
  seq.start_pos = 900;
  seq.q_len = kSparsePrefillMinQueries - 1;
  seq.prefill_sparsity = 0.9;
  small.seqs.push_back(seq);
  small.positions.resize(seq.q_len);
  AttentionPlanConfig cfg;
  cfg.n_heads = 6;
  cfg.n_kv_heads = 2;
  EXPECT_TRUE(plan_attention(small, heads, sp, cfg).prefill_mass.empty());
}

// Split decode items take whole key tiles (the FP8 decode kernel's are 128 keys, bf16's 64): a
// split boundary inside a tile would leave a tile half empty, loaded and computed for nothing.
TEST(AttentionPlan, DecodeSplitsAreWholeKeyTiles) {
  SparseAttentionConfig sp = coverage_config();
  sp.token_budget = 1 << 20;
  const HeadMap heads = HeadMap::all_retrieval(1, 8);
  for (int kt : {64, 128}) {
    for (int32_t keys : {1000, 4097, 20011, 131072}) {
      StepPlan plan;
      SeqStep seq;
      seq.start_pos = keys - 1;
      seq.q_len = 1;
      plan.seqs.push_back(seq);
      AttentionPlanConfig cfg;
      cfg.n_heads = 32;
      cfg.n_kv_heads = 8;
      cfg.decode_key_tile = kt;
      const AttentionPlan ap = plan_attention(plan, heads, sp, cfg);
      ASSERT_FALSE(ap.decode.empty());
      for (const cuda::AttnWork& w : ap.decode) {
        if (w.partial >= 0 && w.k_end[0] < keys) {  // every piece but a unit's last
          EXPECT_EQ((w.k_end[0] - w.k_begin[0]) % kt, 0) << kt << " " << keys;
        }
        EXPECT_EQ(w.k_begin[0] % kt, 0) << kt << " " << keys;
      }
      const cuda::DecodeGrid g = decode_grid(1, sp, cfg);
      EXPECT_EQ(g.key_tile, kt);
      EXPECT_EQ(cuda::decode_chunk(g, keys) % kt, 0) << kt << " " << keys;
    }
  }
}

// A few new tokens over a long history (a question after a cached document) on an idle GPU: the
// chunk runs as 16-row decode tiles split over keys, not as one prefill tile per head.
TEST(AttentionPlan, ShortChunksOverLongHistoriesSplitOverKeys) {
  SparseAttentionConfig sp = coverage_config();
  sp.token_budget = 1 << 20;
  StepPlan plan;
  SeqStep seq;
  seq.start_pos = 20000;
  seq.q_len = 30;
  plan.seqs.push_back(seq);
  const HeadMap heads = HeadMap::all_retrieval(1, 8);
  AttentionPlanConfig cfg;
  cfg.n_heads = 32;
  cfg.n_kv_heads = 8;
  const AttentionPlan ap = plan_attention(plan, heads, sp, cfg);
  EXPECT_TRUE(ap.prefill.empty());
  EXPECT_GE(ap.decode.size(), 8u * 8u * 2u);  // 8 tiles of 4 tokens per head, each split
  EXPECT_FALSE(ap.merges.empty());
  // Many sequences fill the GPU with prefill tiles: those stay.
  StepPlan busy = plan;
  for (int i = 0; i < 20; ++i) busy.seqs.push_back(seq);
  EXPECT_EQ(plan_attention(busy, heads, sp, cfg).prefill.size(), 21u * 8u);
}

// Heads of sliding-window layers (HeadMap::window): layer 0 slides over 100 tokens (not a page
// multiple, and longer than the sparse windows, so ranges planned with those would miss keys),
// layer 1 is global. With a sparse streaming head beside them (layer 1, head 0) the pool keeps
// sink pages, which the windowed layer must not see; without one it keeps none.
HeadMap windowed_heads(bool sparse_streaming) {
  HeadMap heads = sparse_streaming ? HeadMap::from_flags({{true, true}, {false, true}})
                                   : HeadMap::all_retrieval(2, 2);
  heads.set_model_windows({100, 0});
  return heads;
}

TEST(AttentionPlan, ModelWindowLayersCoverExactlyTheirWindow) {
  for (bool sparse_streaming : {true, false}) {
    EXPECT_GT(check_host_plan(coverage_config(), windowed_heads(sparse_streaming)), 1000)
        << "sparse streaming heads " << sparse_streaming;
  }
}

// The decode items a device-planned step's CTAs derive for themselves (CUDA graph replays): the
// same coverage, with the unused CTAs of the fixed grid (padding slots, split counts past a
// sequence's keys) doing nothing, and the partial-result slots of one unit distinct.
// With a model window the CTAs read the sequence table the backend writes for that window
// (stream_window = the window; CudaBackend::Impl::window_seqs), as here.
void check_device_derived(const SparseAttentionConfig& sp, const HeadMap& heads) {
  for (int num_sms : {1, 3, 132}) {
    for (int key_tile : {64, 128}) {
      int derived = 0;
      const int rows = check_coverage(
          sp, heads, 8, 2,
          [&](const StepPlan& plan, int layer) {
            const int padded = static_cast<int>(plan.seqs.size()) + 2;  // two padding slots
            AttentionPlanConfig cfg;
            cfg.layer = layer;
            cfg.n_heads = 8;
            cfg.n_kv_heads = 2;
            cfg.num_sms = num_sms;
            cfg.min_split_keys = 64;
            cfg.decode_key_tile = key_tile;
            const cuda::DecodeGrid g = decode_grid(padded, sp, cfg);
            std::vector<cuda::SeqInfo> infos;
            for (size_t s = 0; s < plan.seqs.size(); ++s) infos.push_back(seq_info(plan, s));
            infos.resize(static_cast<size_t>(padded), cuda::SeqInfo{});
            if (heads.model_window(layer) > 0) {
              for (auto& info : infos) info.stream_window = heads.model_window(layer);
            }
            std::vector<int32_t> cls;
            for (HeadClass c : heads.cls[layer]) cls.push_back(c == HeadClass::kRetrieval ? 0 : 1);
            std::vector<cuda::AttnWork> out;
            std::set<int32_t> partials;
            const int units = padded * g.n_kv_heads * g.units_per_head;
            for (int u = 0; u < units; ++u) {
              for (int y = 0; y < g.splits; ++y) {
                cuda::AttnWork w{};
                int32_t pieces = 0;
                if (!cuda::decode_work(g, infos.data(), cls.data(), u, y, &w, &pieces)) continue;
                EXPECT_LT(w.seq, static_cast<int32_t>(plan.seqs.size()));
                EXPECT_LE(pieces, g.splits);
                if (w.partial >= 0) {
                  EXPECT_TRUE(partials.insert(w.partial).second);
                }
                out.push_back(w);
                ++derived;
              }
            }
            return out;
          },
          true);
      EXPECT_GT(rows, 300) << num_sms;
      EXPECT_GT(derived, 0);
    }
  }
}

TEST(AttentionPlan, DeviceDerivedDecodeItemsCoverEveryVisibleKeyOnce) {
  check_device_derived(coverage_config(), HeadMap::from_flags({{true, false}, {false, true}}));
}

TEST(AttentionPlan, DeviceDerivedDecodeItemsCoverExactlyTheModelWindow) {
  for (bool sparse_streaming : {true, false}) {
    SCOPED_TRACE(sparse_streaming ? "with sparse streaming heads" : "model windows only");
    check_device_derived(coverage_config(), windowed_heads(sparse_streaming));
  }
}

}  // namespace
}  // namespace lserve
