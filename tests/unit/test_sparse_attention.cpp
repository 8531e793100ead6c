// Sparse attention on the CPU backend against dense attention under the explicit visibility mask
// of docs/sparse-attention.md, through the real scheduler and page tables (sparse_harness.h).
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <algorithm>

#include <string>

#include "backend/cpu/cpu_backend.h"
#include "sparse_harness.h"
#include "test_util.h"

namespace lserve {
namespace {

SparseAttentionConfig small_sparse() {
  SparseAttentionConfig s;
  s.sink_tokens = 5;  // not a multiple of anything
  s.local_tokens = 23;
  s.prefill_local_tokens = 41;
  s.page_size = 8;
  s.logical_page_size = 4;
  s.token_budget = 32;  // 4 pages
  s.selector_interval = 3;
  s.selector_skip_layers = 1;
  return s;
}

constexpr double kTolerance = 2e-5;  // f32 kernels vs a double reference, |outputs| ~1

struct Shape {
  int group;
  int head_dim;
  SelectorGranularity granularity;
  int logical_page_size = 4;  // 1: the selector scores the keys themselves
};

class SparseAttention : public testing::TestWithParam<Shape> {};

TEST_P(SparseAttention, MatchesDenseUnderTheVisibilityMask) {
  CpuBackend backend(2);
  test::SparseCase c;
  c.group = GetParam().group;
  c.head_dim = GetParam().head_dim;
  c.sparse = small_sparse();
  c.sparse.granularity = GetParam().granularity;
  c.sparse.logical_page_size = GetParam().logical_page_size;
  c.prompt_len = 97;  // not a multiple of P or L
  c.decode_steps = 30;
  c.chunk = 37;
  // Layer 0 mixed, layer 1 all retrieval, layer 2 mixed the other way round.
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  test::SparseHarness h(backend, c, test::test_seed());
  const double diff = h.run(kTolerance);
  std::printf("max |diff| %.2e, selection ties settled the backend's way %d\n", diff,
              h.selection_ties);
  // Page selection was exercised: refreshed on the interval and reused in between.
  const auto& r = h.refresh_flags;
  EXPECT_GT(std::count(r.begin(), r.end(), true), 3);
  EXPECT_GT(std::count(r.begin(), r.end(), false), 3);
}

// FP8 KV (emulated on the CPU: rounded rows in f32 pools): attention and page selection see the
// rounded keys and values, which the reference rounds the same way, so the tolerance stays f32's.
TEST(SparseAttentionFp8, MatchesTheRoundedReference) {
  CpuBackend backend(2);
  test::SparseCase c;
  c.group = 3;
  c.head_dim = 64;
  c.sparse = small_sparse();
  c.prompt_len = 97;
  c.decode_steps = 30;
  c.chunk = 37;
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  c.kv_dtype = KvDtype::kFp8;
  test::SparseHarness h(backend, c, test::test_seed());
  std::printf("max |diff| %.2e\n", h.run(kTolerance));
  const auto& r = h.refresh_flags;
  EXPECT_GT(std::count(r.begin(), r.end(), true), 3);
}

INSTANTIATE_TEST_SUITE_P(Shapes, SparseAttention,
                         testing::Values(Shape{1, 64, SelectorGranularity::kKvHead},
                                         Shape{3, 64, SelectorGranularity::kKvHead},
                                         Shape{4, 128, SelectorGranularity::kKvHead},
                                         Shape{3, 128, SelectorGranularity::kQueryHead},
                                         Shape{4, 64, SelectorGranularity::kQueryHead},
                                         Shape{3, 64, SelectorGranularity::kKvHead, 1},
                                         Shape{2, 128, SelectorGranularity::kQueryHead, 1}),
                         [](const testing::TestParamInfo<Shape>& i) {
                           return fmt::format("G{}_d{}_{}_L{}", i.param.group, i.param.head_dim,
                                              i.param.granularity == SelectorGranularity::kKvHead
                                                  ? "kvhead"
                                                  : "qhead",
                                              i.param.logical_page_size);
                         });

// Drift-triggered refreshes (selector_drift): queries that change slowly keep their selection
// between interval refreshes until one of a selection head's queries drifts below the cosine
// threshold; the reference recomputes exactly those heads, and the outputs must still agree.
TEST(SparseAttentionDrift, HeadsWhoseQueryDriftedAreReselectedBetweenIntervals) {
  for (auto granularity : {SelectorGranularity::kKvHead, SelectorGranularity::kQueryHead}) {
    CpuBackend backend(2);
    test::SparseCase c;
    c.group = 3;
    c.head_dim = 64;
    c.sparse = small_sparse();
    c.sparse.selector_interval = 12;
    c.sparse.selector_drift = 0.9f;
    c.sparse.granularity = granularity;
    c.query_persistence = 0.985;  // cosine ~0.985 a step: drifts past 0.9 after a few steps
    c.prompt_len = 97;
    c.decode_steps = 40;
    c.chunk = 37;
    c.n_kv_heads = 2;
    c.retrieval = {{true, false}, {true, true}, {false, true}};
    test::SparseHarness h(backend, c, test::test_seed());
    const double diff = h.run(kTolerance);
    std::printf("max |diff| %.2e, %d interval and %d drift refreshes\n", diff, h.ref_refreshes,
                h.drift_refreshes);
    EXPECT_GT(h.ref_refreshes, 0);
    EXPECT_GT(h.drift_refreshes, 0);
  }
}

TEST(SparseAttentionExactness, AllRetrievalWideWindowsAndBudgetEqualDense) {
  // Every head retrieval, budget >= context: sparse equals dense (the harness's reference is then
  // plain causal attention).
  CpuBackend backend(2);
  test::SparseCase c;
  c.sparse = small_sparse();
  c.sparse.token_budget = 256;
  c.retrieval = {{true, true}, {true, true}, {true, true}};
  c.prompt_len = 61;
  c.decode_steps = 12;
  test::SparseHarness h(backend, c, test::test_seed());
  h.run(kTolerance);
  // And streaming heads with windows covering the whole context are dense too.
  test::SparseCase w = c;
  w.retrieval = {{false, false}, {false, true}, {true, false}};
  w.sparse.local_tokens = 1000;
  w.sparse.prefill_local_tokens = 1000;
  test::SparseHarness h2(backend, w, test::test_seed());
  h2.run(kTolerance);
}

// Layers with the model's own sliding window (Gemma 3): their heads see exactly their last W
// positions and no sink, in dense and sparse mode. Layer 1 is global with a sparse streaming
// head (so the pool keeps sink pages the windowed layers must not see), or every head outside
// the windows is a retrieval head (no sink pages at all; what --dense gives, since the engine
// then makes no sparse streaming heads). W = 29 is not a multiple of the page size; the prompt
// and the decode steps run past it.
TEST(SparseAttentionModelWindows, WindowedLayersSeeExactlyTheirWindow) {
  for (auto [sparse_streaming, dense] :
       {std::pair{true, false}, std::pair{false, false}, std::pair{false, true}}) {
    SCOPED_TRACE(fmt::format("sparse streaming head {}, dense {}", sparse_streaming, dense));
    CpuBackend backend(2);
    test::SparseCase c;
    c.group = 3;
    c.head_dim = 64;
    c.sparse = small_sparse();
    c.sparse.dense = dense;
    c.prompt_len = 97;
    c.decode_steps = 30;
    c.chunk = 37;
    c.n_kv_heads = 2;
    c.retrieval = {{true, true}, {!sparse_streaming, true}, {true, true}};
    c.model_windows = {29, 0, 29};
    test::SparseHarness h(backend, c, test::test_seed());
    std::printf("max |diff| %.2e\n", h.run(kTolerance));
  }
}

TEST(SparseAttentionMemory, StreamingPagesStayBoundedAsTheSequenceGrows) {
  CpuBackend backend(1);
  test::SparseCase c;
  c.n_layers = 1;
  c.head_dim = 64;
  c.sparse = small_sparse();
  c.retrieval = {{false, true}};
  c.prompt_len = 30;
  c.decode_steps = 10 * c.sparse.local_tokens;  // 10x the decode window
  c.num_pages = 64;
  test::SparseHarness h(backend, c, test::test_seed());
  h.run(kTolerance);
  const int P = c.sparse.page_size;
  const int bound = (c.sparse.sink_tokens + c.sparse.local_tokens + 2 * P + P - 1) / P;
  const int peak_decode =
      *std::max_element(h.stream_pages_per_step.begin() + 5, h.stream_pages_per_step.end());
  EXPECT_LE(peak_decode, bound);
  EXPECT_GE(h.pages_per_step.back(), (c.prompt_len + c.decode_steps) / P);  // retrieval grows
}

// Dynamic block-sparse prefill: retrieval heads' prefill chunks attend to the key blocks the
// antidiagonal estimate keeps (sparse/prefill_blocks.h), which the reference recomputes from the
// same queries and keys and applies as an explicit mask. A prompt of several 128-token blocks,
// mixed head classes, decode after it; chunks of 250 tokens (the scheduler ends them on blocks)
// and of 100 (less than a block: estimates from partial blocks). At threshold 0.5 random queries
// drop blocks; at 1 none are dropped and the result is dense attention. Both estimates; a dense
// tail of 100 positions (the last query block) and one of the whole prompt (nothing dropped).
TEST(SparseAttentionPrefillBlocks, KeptBlocksAreExactlyWhatTheQueriesSee) {
  CpuBackend backend(2);
  test::SparseCase c;
  c.sparse = small_sparse();
  c.sparse.prefill_local_tokens = 300;
  c.sparse.token_budget = 64;
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  c.prompt_len = 613;  // five blocks, the last partial
  c.decode_steps = 6;
  c.num_pages = 128;
  c.num_stream_pages = 128;
  struct Run {
    int chunk;
    double threshold;
    PrefillEstimate estimate;
    int tail = 0;
  };
  constexpr auto kAnti = PrefillEstimate::kAntidiagonal, kRows = PrefillEstimate::kSampledRows;
  for (auto [chunk, threshold, estimate, tail] :
       {Run{250, 0.5, kAnti}, Run{100, 0.5, kAnti}, Run{250, 1.0, kAnti}, Run{250, 0.5, kRows},
        Run{100, 0.5, kRows}, Run{100, 0.5, kAnti, 100}, Run{250, 0.5, kAnti, 613}}) {
    c.chunk = chunk;
    c.sparse.prefill_sparsity = threshold;
    c.sparse.prefill_estimate = estimate;
    c.sparse.prefill_dense_tail = tail;
    test::SparseHarness h(backend, c, test::test_seed());
    const Backend::PrefillBlockStats before = backend.prefill_block_stats();
    const double diff = h.run(kTolerance);
    std::printf(
        "chunk %d, threshold %.1f, %s, tail %d: %d estimates, %d key blocks dropped, %d rows on "
        "a rounding-close kept set, max |diff| %.2e\n",
        chunk, threshold, std::string(prefill_estimate_name(estimate)).c_str(), tail,
        h.prefill_block_estimates, h.prefill_blocks_dropped, h.prefill_block_ties, diff);
    h.expect_block_counts(before);
    EXPECT_EQ(h.prefill_block_ties, 0) << "the CPU op estimates exactly as the reference";
    EXPECT_GT(h.prefill_block_estimates, 10);
    if (threshold < 1.0 && tail < c.prompt_len) {
      EXPECT_GT(h.prefill_blocks_dropped, 0);
    } else {
      EXPECT_EQ(h.prefill_blocks_dropped, 0);
    }
  }
}

}  // namespace
}  // namespace lserve
