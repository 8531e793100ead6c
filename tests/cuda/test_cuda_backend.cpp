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
#include "model/model.h"
#include "sparse_harness.h"
#include "test_util.h"

// Skips the calling test (or fixture SetUp), saying why, where no GPU can be used.
#define LSERVE_SKIP_WITHOUT_GPU()                                   \
  do {                                                              \
    std::string why_no_gpu;                                         \
    if (!lserve::cuda_device_available(&why_no_gpu)) {              \
      GTEST_SKIP() << "no CUDA device here (" << why_no_gpu << ")"; \
    }                                                               \
  } while (0)

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

// Random values already representable in bf16, so both backends start from the same numbers.
std::vector<float> bf16_random(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

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
  for (auto [rows, cols] : {std::pair{1, 97}, {17, 576}, {33, 1000}}) {
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
    Tensor og16 = gpu_->alloc(DType::BF16, n, m), og32 = gpu_->alloc(DType::F32, n, m);
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
  c.prompt_len = 301;  // several 64-key tiles and prefill chunks
  c.decode_steps = 40;
  c.chunk = 97;
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  c.num_pages = 64;
  c.num_stream_pages = 64;
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
                    GpuShape{4, 64, SelectorGranularity::kQueryHead, K::kReference}),
    [](const testing::TestParamInfo<GpuShape>& i) {
      return fmt::format("G{}_d{}_{}_{}", i.param.group, i.param.head_dim,
                         i.param.granularity == SelectorGranularity::kKvHead ? "kvhead" : "qhead",
                         kernels_name(i.param.kernels));
    });

// The decode step's device work is capturable: every decode layer (RoPE/append, page selection,
// attention with split-KV merges) is recorded into a CUDA graph, replayed, and its outputs are
// checked against the visibility-mask reference like the directly launched ones.
TEST(CudaGraph, DecodeLayersReplayedFromGraphsMatchTheReference) {
  LSERVE_SKIP_WITHOUT_GPU();
  CudaBackend gpu(0);
  const auto st = static_cast<cudaStream_t>(gpu.stream_handle());
  int replayed = 0;
  test::SparseCase c;
  c.group = 4;
  c.head_dim = 128;
  c.sparse = small_sparse();
  c.prompt_len = 301;
  c.decode_steps = 12;
  c.chunk = 97;
  c.n_kv_heads = 2;
  c.retrieval = {{true, false}, {true, true}, {false, true}};
  c.run_decode_layer = [&](const std::function<void()>& work) {
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    // Thread-local mode: the backend may grow its staging area (cudaMalloc) while recording.
    ASSERT_EQ(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    work();
    ASSERT_EQ(cudaStreamEndCapture(st, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, st), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    ++replayed;
  };
  test::SparseHarness h(gpu, c, test::test_seed());
  const double diff = h.run(kAttnTolerance);
  std::printf("graph replays %d, max |diff| %.2e\n", replayed, diff);
  EXPECT_EQ(replayed, c.decode_steps * c.n_layers);
}

// A small random Llama: same bf16 weights on both backends; logits agree within what bf16
// activations through two layers allow.
TEST_F(Cuda, WholeModelLogitsMatchTheCpu) {
  std::mt19937_64 rng(test::test_seed());
  ModelConfig c;
  c.arch = "llama";
  c.n_layers = 2;
  c.d_model = 256;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.d_ff = 512;
  c.vocab_size = 1000;
  c.max_context = 4096;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tied_embeddings = true;
  c.validate("test");
  auto make = [&](Backend& b, uint64_t seed) {
    std::mt19937_64 r(seed);
    ModelWeights w;
    auto mat = [&](int64_t rows, int64_t cols, float scale) {
      const auto v = bf16_random(static_cast<size_t>(rows * cols), r, scale);
      return b.upload(v.data(), rows, cols);
    };
    auto ones = [&](int64_t cols) {
      std::vector<float> v(cols, 1.0f);
      return b.upload(v.data(), 1, cols);
    };
    w.tok_embd = mat(c.vocab_size, c.d_model, 1.0f);
    w.output = w.tok_embd;
    w.output_norm = ones(c.d_model);
    for (int l = 0; l < c.n_layers; ++l) {
      LayerWeights L;
      const float s = 1.0f / std::sqrt(static_cast<float>(c.d_model));
      L.attn_norm = ones(c.d_model);
      L.ffn_norm = ones(c.d_model);
      L.wq = mat(c.q_dim(), c.d_model, s);
      L.wk = mat(c.kv_dim(), c.d_model, s);
      L.wv = mat(c.kv_dim(), c.d_model, s);
      L.wo = mat(c.d_model, c.q_dim(), s);
      L.w_gate = mat(c.d_ff, c.d_model, s);
      L.w_up = mat(c.d_ff, c.d_model, s);
      L.w_down = mat(c.d_model, c.d_ff, 1.0f / std::sqrt(static_cast<float>(c.d_ff)));
      w.layers.push_back(L);
    }
    return make_model(c, std::move(w));
  };
  const uint64_t wseed = rng();
  auto mc = make(cpu_, wseed);
  auto mg = make(*gpu_, wseed);
  std::vector<int32_t> tokens(333);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % c.vocab_size);
  OfflineRunOptions o;
  o.chunk = 128;
  o.page_size = 16;
  const auto lc = sequence_logits(*mc, cpu_, tokens, o);
  const auto lg = sequence_logits(*mg, *gpu_, tokens, o);
  const double err = rel_l2(lg, lc);
  int agree = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const float* a = lc.data() + i * c.vocab_size;
    const float* b = lg.data() + i * c.vocab_size;
    agree += std::max_element(a, a + c.vocab_size) - a == std::max_element(b, b + c.vocab_size) - b;
  }
  std::printf("whole model: rel L2 %.3e, top-1 agreement %d/%zu\n", err, agree, tokens.size());
  EXPECT_LT(err, 2e-2);
  EXPECT_GE(agree, static_cast<int>(tokens.size() * 9 / 10));
}

}  // namespace
}  // namespace lserve
