// The CUDA backend against the CPU reference: every op on random inputs of odd sizes, the sparse
// attention kernels (prefill, decode, page selection) through the real scheduler, and whole-model
// logits. Skipped, saying why, where no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/dtype.h"
#include "engine/offline.h"
#include "gpu_test.h"
#include "model/model.h"
#include "sparse_harness.h"
#include "test_util.h"

namespace lserve {
namespace {

class Cuda : public testing::Test {
 protected:
  void SetUp() override {
    LSERVE_SKIP_WITHOUT_GPU();
    gpu_ = std::make_unique<CudaBackend>(0);
  }
  std::unique_ptr<CudaBackend> gpu_;
  CpuBackend cpu_{2};
};

using test::bf16_random;

std::vector<float> host(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.to_host(t, v.data());
  return v;
}

// ||a - b|| / ||b||
double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// bf16 outputs of f32 math: 8 significant bits, so 2^-8 relative per element; vectors of them
// land near 2e-3 relative L2.
constexpr double kBf16Op = 5e-3;

TEST_F(Cuda, ElementwiseOpsMatchTheCpu) {
  std::mt19937_64 rng(test::test_seed());
  // Widths for every RMSNorm path: any width (97, 8200), and 1, 2 or 4 vector pieces per thread.
  for (auto [rows, cols] :
       {std::pair{1, 97}, {17, 576}, {33, 1000}, {2, 4096}, {3, 8192}, {1, 8200}}) {
    const auto xv = bf16_random(static_cast<size_t>(rows) * cols, rng);
    const auto yv = bf16_random(xv.size(), rng);
    const auto wv = bf16_random(cols, rng);
    auto both = [&](auto op) {
      Tensor xc = cpu_.upload(xv.data(), rows, cols), xg = gpu_->upload(xv.data(), rows, cols);
      Tensor yc = cpu_.upload(yv.data(), rows, cols), yg = gpu_->upload(yv.data(), rows, cols);
      Tensor wc = cpu_.upload(wv.data(), 1, cols), wg = gpu_->upload(wv.data(), 1, cols);
      Tensor oc = cpu_.alloc(DType::F32, rows, cols), og = gpu_->alloc(DType::BF16, rows, cols);
      op(cpu_, xc, yc, wc, oc);
      op(*gpu_, xg, yg, wg, og);
      return rel_l2(host(*gpu_, og), host(cpu_, oc));
    };
    EXPECT_LT(both([](Backend& b, Tensor& x, Tensor& y, Tensor& w, Tensor& o) {
                b.rms_norm(x, w, 1e-5f, o);
              }),
              kBf16Op);
    std::vector<int32_t> iota(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) iota[r] = r;
    EXPECT_LT(both([&](Backend& b, Tensor& x, Tensor& y, Tensor& w, Tensor& o) {
                b.rms_norm(x, w, 1e-5f, x);  // in place, as the model's final norm runs
                b.gather_rows(x, iota, o);
              }),
              kBf16Op);
    EXPECT_LT(
        both([](Backend& b, Tensor& x, Tensor& y, Tensor& w, Tensor& o) { b.silu_mul(x, y, o); }),
        kBf16Op);
    EXPECT_LT(both([](Backend& b, Tensor& x, Tensor& y, Tensor& w, Tensor& o) {
                b.add(x, y);
                b.add_bias(x, w);
                b.gather_rows(x, std::vector<int32_t>(static_cast<size_t>(x.rows), 0), o);
              }),
              kBf16Op);
    // Embedding and row gather are exact copies.
    std::vector<int32_t> ids(rows);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % rows);
    Tensor tg = gpu_->upload(xv.data(), rows, cols), eg = gpu_->alloc(DType::BF16, rows, cols);
    gpu_->embed(tg, ids, eg);
    const auto e = host(*gpu_, eg);
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) ASSERT_EQ(e[r * cols + c], xv[ids[r] * cols + c]);
    }
  }
}

TEST_F(Cuda, MatmulMatchesTheCpuForOddShapes) {
  std::mt19937_64 rng(test::test_seed());
  for (auto [n, m, k] : {std::tuple{1, 97, 64}, {7, 1000, 576}, {129, 192, 320}}) {
    const auto xv = bf16_random(static_cast<size_t>(n) * k, rng);
    const auto wv = bf16_random(static_cast<size_t>(m) * k, rng, 0.05f);
    Tensor xc = cpu_.upload(xv.data(), n, k), wc = cpu_.upload(wv.data(), m, k);
    Tensor xg = gpu_->upload(xv.data(), n, k), wg = gpu_->upload(wv.data(), m, k);
    Tensor oc = cpu_.alloc(DType::F32, n, m);
    // Zero-filled first: compute-sanitizer initcheck does not see the stores of some cuBLASLt
    // kernels (n = 7 here) and would flag the copy back; the comparison below proves they wrote.
    Tensor og16 = gpu_->alloc(DType::BF16, n, m), og32 = gpu_->alloc(DType::F32, n, m);
    gpu_->fill(og16, 0.0f);
    gpu_->fill(og32, 0.0f);
    cpu_.matmul(xc, wc, oc);
    gpu_->matmul(xg, wg, og16);
    gpu_->matmul(xg, wg, og32);
    EXPECT_LT(rel_l2(host(*gpu_, og16), host(cpu_, oc)), kBf16Op) << n << "x" << m << "x" << k;
    // f32 output: only the summation order differs.
    EXPECT_LT(rel_l2(host(*gpu_, og32), host(cpu_, oc)), 1e-4) << n << "x" << m << "x" << k;
  }
}

// bf16 probabilities (2^-9 relative each) and a bf16 output over |o| <~ 1; the H200 runs so far
// (every case, with the wgmma, portable and reference kernels) measured at most 1.05e-2, so 2e-2
// leaves room for other seeds and no more.
constexpr double kAttnTolerance = 2e-2;

SparseAttentionConfig small_sparse() {
  SparseAttentionConfig s;
  s.sink_tokens = 5;
  s.local_tokens = 70;
  s.prefill_local_tokens = 150;
  s.page_size = 16;
  s.logical_page_size = 4;
  s.token_budget = 64;
  s.selector_interval = 3;
  s.selector_skip_layers = 1;
  return s;
}

struct GpuShape {
  int group;
  int head_dim;
  SelectorGranularity granularity;
  CudaBackend::AttnKernels kernels;
  int logical_page_size = 4;  // 1: the selector scores the keys themselves
  KvDtype kv_dtype = KvDtype::kAuto;
};

class CudaSparse : public testing::TestWithParam<GpuShape> {};

TEST_P(CudaSparse, MatchesDenseUnderTheVisibilityMask) {
  LSERVE_SKIP_WITHOUT_GPU();
  CudaBackend gpu(0);
  gpu.set_attention_kernels(GetParam().kernels);
  test::SparseCase c;
  c.group = GetParam().group;
  c.head_dim = GetParam().head_dim;
  c.sparse = small_sparse();
  c.sparse.granularity = GetParam().granularity;
  c.sparse.logical_page_size = GetParam().logical_page_size;
  c.prompt_len = 301;  // several 64-key tiles and prefill chunks
  c.decode_steps = 40;
  c.chunk = 97;
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  c.num_pages = 64;
  c.num_stream_pages = 64;
  c.kv_dtype = GetParam().kv_dtype;
  test::SparseHarness h(gpu, c, test::test_seed());
  const double diff = h.run(kAttnTolerance);
  std::printf("max |diff| %.2e\n", diff);
  const auto& r = h.refresh_flags;
  EXPECT_GT(std::count(r.begin(), r.end(), true), 3);
}

// kAuto runs the wgmma prefill tiles on the H200; kPortable the mma.sync ones every GPU runs.
using K = CudaBackend::AttnKernels;
const char* kernels_name(K k) {
  return k == K::kAuto ? "auto" : k == K::kPortable ? "portable" : "reference";
}
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaSparse,
    testing::Values(GpuShape{1, 64, SelectorGranularity::kKvHead, K::kAuto},
                    GpuShape{3, 64, SelectorGranularity::kKvHead, K::kAuto},
                    GpuShape{4, 128, SelectorGranularity::kKvHead, K::kAuto},
                    GpuShape{4, 128, SelectorGranularity::kQueryHead, K::kAuto},
                    GpuShape{3, 128, SelectorGranularity::kKvHead, K::kPortable},
                    GpuShape{1, 64, SelectorGranularity::kQueryHead, K::kPortable},
                    GpuShape{3, 128, SelectorGranularity::kKvHead, K::kReference},
                    GpuShape{4, 64, SelectorGranularity::kQueryHead, K::kReference},
                    GpuShape{3, 64, SelectorGranularity::kKvHead, K::kAuto, 1},
                    GpuShape{4, 128, SelectorGranularity::kQueryHead, K::kAuto, 1},
                    // FP8 pools: E4M3 tiles widened in shared memory, scales on the scores and
                    // probabilities; the reference rounds its keys and values the same way.
                    GpuShape{4, 128, SelectorGranularity::kKvHead, K::kAuto, 4, KvDtype::kFp8},
                    GpuShape{3, 64, SelectorGranularity::kQueryHead, K::kAuto, 4, KvDtype::kFp8},
                    GpuShape{3, 128, SelectorGranularity::kKvHead, K::kPortable, 4, KvDtype::kFp8},
                    GpuShape{4, 64, SelectorGranularity::kKvHead, K::kReference, 4, KvDtype::kFp8}),
    [](const testing::TestParamInfo<GpuShape>& i) {
      return fmt::format("G{}_d{}_{}_{}_L{}{}", i.param.group, i.param.head_dim,
                         i.param.granularity == SelectorGranularity::kKvHead ? "kvhead" : "qhead",
                         kernels_name(i.param.kernels), i.param.logical_page_size,
                         i.param.kv_dtype == KvDtype::kFp8 ? "_fp8" : "");
    });

// Device-planned decode (what recorded CUDA graph steps run): every decode layer's device work
// (RoPE/append, page selection, attention with split-KV merges) derives its work from the step
// tables for a grid padded to 4 sequence slots, is recorded through the backend's record() and
// replayed, and its outputs are checked against the visibility-mask reference like the directly
// launched ones.
TEST(CudaGraph, DevicePlannedDecodeLayersReplayedFromRecordingsMatchTheReference) {
  LSERVE_SKIP_WITHOUT_GPU();
  CudaBackend gpu(0);
  for (auto granularity : {SelectorGranularity::kKvHead, SelectorGranularity::kQueryHead}) {
    int replayed = 0;
    test::SparseCase c;
    c.group = 4;
    c.head_dim = 128;
    c.sparse = small_sparse();
    c.sparse.granularity = granularity;
    c.prompt_len = 301;
    c.decode_steps = 12;
    c.chunk = 97;
    c.n_kv_heads = 2;
    c.retrieval = {{true, false}, {true, true}, {false, true}};
    c.pad_decode_to = 4;
    c.run_decode_layer = [&](const std::function<void()>& work) {
      auto rec = gpu.record(work);
      ASSERT_TRUE(rec != nullptr);
      ASSERT_TRUE(rec->replay());
      gpu.synchronize();
      ++replayed;
    };
    test::SparseHarness h(gpu, c, test::test_seed());
    const double diff = h.run(kAttnTolerance);
    std::printf("recorded replays %d, max |diff| %.2e\n", replayed, diff);
    EXPECT_EQ(replayed, c.decode_steps * c.n_layers);
  }
}

// The same device-planned decode launched directly (no recording), with the reference kernel too.
TEST(CudaGraph, DevicePlannedDecodeLaunchedDirectlyMatchesTheReference) {
  LSERVE_SKIP_WITHOUT_GPU();
  for (auto [kernels, kv_dtype] : {std::pair{CudaBackend::AttnKernels::kAuto, KvDtype::kAuto},
                                   std::pair{CudaBackend::AttnKernels::kReference, KvDtype::kAuto},
                                   std::pair{CudaBackend::AttnKernels::kAuto, KvDtype::kFp8}}) {
    CudaBackend gpu(0);
    gpu.set_attention_kernels(kernels);
    test::SparseCase c;
    c.group = 3;
    c.head_dim = 64;
    c.sparse = small_sparse();
    c.prompt_len = 250;
    c.decode_steps = 20;
    c.chunk = 64;
    c.n_kv_heads = 2;
    c.pad_decode_to = 2;
    c.kv_dtype = kv_dtype;
    test::SparseHarness h(gpu, c, test::test_seed());
    std::printf("max |diff| %.2e\n", h.run(kAttnTolerance));
  }
}

// A small random Llama: same bf16 weights on both backends; logits agree within what bf16
// activations through two layers allow. With fp8 KV the GPU stores E4M3 pools and the CPU
// emulates the same rounding in f32.
void expect_whole_model_logits_match(CpuBackend& cpu, CudaBackend& gpu, KvDtype kv_dtype) {
  std::mt19937_64 rng(test::test_seed());
  const ModelConfig c = test::small_llama_config(2, 64);
  const uint64_t wseed = rng();
  auto mc = test::random_llama(cpu, c, wseed);
  auto mg = test::random_llama(gpu, c, wseed);
  std::vector<int32_t> tokens(333);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  OfflineRunOptions o;
  o.chunk = 128;
  o.page_size = 16;
  o.kv_dtype = kv_dtype;
  const auto lc = sequence_logits(*mc, cpu, tokens, o);
  const auto lg = sequence_logits(*mg, gpu, tokens, o);
  const double err = rel_l2(lg, lc);
  int agree = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* a = lc.data() + i * c.vocab_size;
    const float* b = lg.data() + i * c.vocab_size;
    agree += std::max_element(a, a + c.vocab_size) - a == std::max_element(b, b + c.vocab_size) - b;
  }
  std::printf("whole model, %s KV: rel L2 %.3e, top-1 agreement %d/%zu\n",
              std::string(kv_dtype_name(kv_dtype)).c_str(), err, agree, tokens.size());
  // FP8: the GPU rounds bf16 keys and the CPU f32 ones, so a few elements near a rounding
  // boundary land one E4M3 step (1/16) apart; that adds to the bf16 activations' error.
  EXPECT_LT(err, kv_dtype == KvDtype::kFp8 ? 4e-2 : 2e-2);
  EXPECT_GE(agree, static_cast<int>(tokens.size() * 9 / 10));
}

TEST_F(Cuda, WholeModelLogitsMatchTheCpu) {
  expect_whole_model_logits_match(cpu_, *gpu_, KvDtype::kAuto);
}

TEST_F(Cuda, WholeModelLogitsWithFp8KvMatchTheCpu) {
  expect_whole_model_logits_match(cpu_, *gpu_, KvDtype::kFp8);
}

}  // namespace
}  // namespace lserve
