// Sliding-window layers (Gemma 3) as streaming heads of the model's window (HeadMap::window,
// docs/sparse-attention.md): the head map they make, and exact attention through them in the
// offline dense path, without a model file.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "engine/offline.h"
#include "kv/kv_layout.h"
#include "test_util.h"

namespace lserve {
namespace {

TEST(ModelWindows, WindowedLayersBecomeStreamingHeadsOfTheirWindow) {
  // Layer 1 has a sparse streaming head from a pattern; layer 0 and 2 slide, layer 1 is global.
  HeadMap m = HeadMap::from_flags({{true, true}, {false, true}, {true, false}});
  EXPECT_EQ(m.max_model_window(), 0);
  m.set_model_windows({});
  EXPECT_TRUE(m.window.empty());
  m.set_model_windows({512, 0, 256});
  EXPECT_EQ(m.count(0, HeadClass::kStreaming), 2);
  EXPECT_EQ(m.count(2, HeadClass::kStreaming), 2);
  EXPECT_EQ(m.cls[1][0], HeadClass::kStreaming);  // the pattern's choice on a global layer stays
  EXPECT_EQ(m.cls[1][1], HeadClass::kRetrieval);
  EXPECT_EQ(m.slot[0][1], 1);
  EXPECT_EQ(m.model_window(0), 512);
  EXPECT_EQ(m.model_window(1), 0);
  EXPECT_EQ(m.max_model_window(), 512);
  EXPECT_TRUE(m.has_sparse_streaming());
  HeadMap all = HeadMap::all_retrieval(2, 2);
  all.set_model_windows({64, 0});
  EXPECT_FALSE(all.has_sparse_streaming());
  EXPECT_THROW(all.set_model_windows({64}), Error);
}

// Attention within a window only depends on relative positions (RoPE), so in a one-layer model
// whose layer slides over W tokens, position i's logits are the last logits of the W tokens ending
// at i run as a sequence of their own.
TEST(ModelWindows, AOneLayerWindowedModelSeesExactlyItsWindow) {
  CpuBackend b(2);
  constexpr int kWindow = 7;
  ModelConfig c = test::small_llama_config(1, 64);
  c.rope_style = RopeStyle::kHalfSplit;
  c.layer_windows = {kWindow};
  auto model = test::random_llama(b, c, 11);
  ModelConfig global = c;
  global.layer_windows.clear();
  auto unwindowed = test::random_llama(b, global, 11);

  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 37 + 5) % c.vocab_size);
  OfflineRunOptions o;
  o.chunk = 5;
  o.page_size = 4;
  o.scramble_pages = true;
  const auto all = sequence_logits(*model, b, tokens, o);
  const auto full = sequence_logits(*unwindowed, b, tokens, o);
  double max_diff = 0, windowed_vs_full = 0;
  for (int i = kWindow; i < 40; ++i) {
    const std::vector<int32_t> piece(tokens.begin() + i - kWindow + 1, tokens.begin() + i + 1);
    OfflineRunOptions last;
    last.all_logits = false;
    const auto want = sequence_logits(*unwindowed, b, piece, last);
    for (int v = 0; v < c.vocab_size; ++v) {
      const float got = all[static_cast<size_t>(i) * c.vocab_size + v];
      max_diff = std::max<double>(max_diff, std::abs(got - want[v]));
      windowed_vs_full = std::max<double>(
          windowed_vs_full, std::abs(got - full[static_cast<size_t>(i) * c.vocab_size + v]));
    }
  }
  // Only the rotation angles' rounding differs (positions i-W+1..i vs 0..W-1).
  EXPECT_LT(max_diff, 1e-3);
  EXPECT_GT(windowed_vs_full, 0.1);  // the window does change what the model sees
  // Within the first window, windowed and global attention are the same thing.
  for (int i = 0; i < kWindow * c.vocab_size; ++i) EXPECT_NEAR(all[i], full[i], 1e-4);
}

// The Gemma 3 graph with windowed layers (a random small model, test_util's, which the GPU tests
// also use): prefill in 37-token chunks over scrambled pages gives the logits of one 333-token
// chunk, so the windowed layers' streaming pages are found across chunks (f32 summation order
// only: measured 2e-7).
TEST(ModelWindows, ARandomGemma3GivesTheSameLogitsInAnyChunking) {
  CpuBackend b(2);
  const ModelConfig c = test::small_gemma3_config(3, 64, 48);
  auto model = test::random_gemma3(b, c, 5);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 333; ++i) tokens.push_back((i * 131 + 7) % c.vocab_size);
  OfflineRunOptions whole;
  whole.chunk = 333;
  OfflineRunOptions chunked;
  chunked.chunk = 37;
  chunked.scramble_pages = true;
  const auto a = sequence_logits(*model, b, tokens, whole);
  const auto bl = sequence_logits(*model, b, tokens, chunked);
  ASSERT_EQ(a.size(), bl.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(bl[i]) - a[i]) * (static_cast<double>(bl[i]) - a[i]);
    den += static_cast<double>(a[i]) * a[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-5);
}

}  // namespace
}  // namespace lserve
