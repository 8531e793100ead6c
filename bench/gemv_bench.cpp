// Skinny-GEMM benchmark on the GPU: the Llama-3-8B decode projections,
// out[n, o] = x[n, k] W[o, k]^T (bf16 in, f32 accumulation, bf16 out), through every gemv
// configuration (backend/cuda/gemv.h) and through cuBLASLt as backend/cuda/gemm.cpp calls it, at
// the token counts given. Each configuration is first validated against cuBLAS (relative L2 of f32
// outputs). Each timed call starts with a cold L2: a 256 MB buffer is written before it (not
// timed), so the weights come from HBM as in a model step; chains of 8 calls on distinct weights
// (consecutive layers) are timed too, with and without programmatic dependent launch. Prints
// markdown tables (stdout): the best configuration against cuBLAS, then every configuration;
// progress goes to stderr.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/launch.h"

namespace lserve::cuda {
namespace {

struct Shape {
  const char* name;
  int64_t rows;  // O
  int64_t k;
};
constexpr Shape kShapes[] = {{"qkv", 6144, 4096},
                             {"o", 4096, 4096},
                             {"gate_up", 28672, 4096},
                             {"down", 4096, 14336},
                             {"lm_head", 128256, 4096}};

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { LSERVE_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Evicts the previous call's weights from L2 (50 MB on the H200) before each timed call.
// kRead also leaves L2 clean: a memset leaves ~50 MB of dirty lines whose write-back then shares
// HBM with the timed call's reads; reading a further 128 MB (through the gemv) replaces them.
enum class Flush { kMemset, kRead };

class Flusher {
 public:
  static constexpr size_t kBytes = 256u << 20;
  static constexpr int64_t kReadRows = 16384, kReadK = 4096;  // 128 MB of bf16
  explicit Flusher(Flush mode) : mode_(mode), buf_(kBytes) {
    LSERVE_CUDA_CHECK(cudaMemset(buf_.p, 0x3c, kBytes));  // bf16 0x3c3c ~ 0.011: finite
  }
  void operator()(cudaStream_t st) const {
    if (mode_ == Flush::kMemset) {
      LSERVE_CUDA_CHECK(cudaMemsetAsync(buf_.p, 0, kBytes, st));
    } else {
      LSERVE_CUDA_CHECK(cudaMemsetAsync(buf_.p, 0, kBytes / 2, st));
      // The second half of the buffer read as a [16384, 4096] weight; the output lands in the
      // first half (already dirty, and tiny).
      char* base = static_cast<char*>(buf_.p);
      const GemvTarget t{base + kBytes / 2, kReadRows, base + (64u << 20), kReadRows};
      LSERVE_CUDA_CHECK(launch_gemv(base, kReadK, 1, kReadK, &t, 1, false, false, gemv_configs()[0],
                                    Stream{st, false}));
    }
  }

 private:
  Flush mode_;
  DeviceBuffer buf_;
};

#define CUBLAS_CHECK(expr)                                                                       \
  do {                                                                                           \
    const cublasStatus_t st_ = (expr);                                                           \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                          \
      ::lserve::fail("cuBLASLt error {} in {} at {}:{}", static_cast<int>(st_), #expr, __FILE__, \
                     __LINE__);                                                                  \
    }                                                                                            \
  } while (0)

// cuBLASLt directly (gemm.h's Gemm may pick the gemv kernel itself at these sizes). Row-major
// out[n, m] = x[n, k] w[m, k]^T as column-major out^T [m, n] = (w as [k, m])^T (x as [k, n]), f32
// compute, the heuristic's first algorithm: the engine's layout and choice.
class CublasLt {
 public:
  CublasLt() : workspace_(kWorkspaceBytes) { CUBLAS_CHECK(cublasLtCreate(&handle_)); }
  ~CublasLt() { cublasLtDestroy(handle_); }
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    Plan() = default;
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;
    ~Plan() {
      cublasLtMatmulDescDestroy(op);
      cublasLtMatrixLayoutDestroy(a);
      cublasLtMatrixLayoutDestroy(b);
      cublasLtMatrixLayoutDestroy(c);
    }
  };

  void plan(Plan& p, int64_t n, int64_t m, int64_t k, bool out_f32) {
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, m, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, n, k));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_f32 ? CUDA_R_32F : CUDA_R_16BF, m, n, m));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    LSERVE_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0, "cuBLASLt: no algorithm for {}x{}x{}", n,
                 m, k);
    p.algo = result.algo;
  }

  void run(const Plan& p, const void* x, const void* w, void* out, cudaStream_t st) {
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c,
                                &p.algo, workspace_.p, kWorkspaceBytes, st));
  }

 private:
  static constexpr size_t kWorkspaceBytes = 32u << 20;
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
};

struct Events {
  cudaEvent_t a, b;
  Events() {
    LSERVE_CUDA_CHECK(cudaEventCreate(&a));
    LSERVE_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Events() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

// Median microseconds of `fn` over `reps` calls, each after a flush. The flush is queued ahead of
// the first event and nothing waits in between, so the call is queued long before the GPU reaches
// it: neither the flush nor the host's launch time is in the interval.
template <typename Fn>
double median_us(cudaStream_t st, const Flusher& flush, int reps, Fn fn) {
  for (int i = 0; i < 3; ++i) fn();
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
  Events ev;
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    flush(st);
    LSERVE_CUDA_CHECK(cudaEventRecord(ev.a, st));
    fn();
    LSERVE_CUDA_CHECK(cudaEventRecord(ev.b, st));
    LSERVE_CUDA_CHECK(cudaEventSynchronize(ev.b));
    float ms = 0;
    LSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.a, ev.b));
    us.push_back(1e3 * ms);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

std::vector<float> download_f32(const void* d, size_t n) {
  std::vector<float> h(n);
  LSERVE_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

std::string config_name(const GemvConfig& c) {
  return "mt" + std::to_string(c.mt) + "/w" + std::to_string(c.warps) + "/u" +
         std::to_string(c.unroll);
}

struct Row {
  std::string shape;
  int n = 0;
  double cublas_tbs = 0, best_tbs = 0, best_us = 0, max_err = 0;
  GemvConfig best{};
  std::vector<double> tbs;                                 // per configuration
  double chain_cublas = 0, chain_gemv = 0, chain_pdl = 0;  // TB/s per call in a chain
};

// A chain of calls on distinct weights (like consecutive layers), L2 cold only at its start:
// back-to-back launches hide the host's launch time, and programmatic dependent launches also
// overlap each call's weight fetch with the previous call's tail.
constexpr int kChain = 8;

int run(const std::vector<int>& ns, const std::vector<std::string>& shape_names, int reps,
        Flush flush_mode) {
  cudaStream_t st;
  LSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const Flusher flush(flush_mode);
  CublasLt cublas;
  const auto& configs = gemv_configs();
  constexpr int kMaxN = 32;

  // The fixed cost in every interval: a launch that moves almost nothing.
  {
    DeviceBuffer tiny(1 << 20);
    char* b = static_cast<char*>(tiny.p);
    const GemvTarget t{b, 16, b + (512 << 10), 16};
    const double us = median_us(st, flush, reps, [&] {
      LSERVE_CUDA_CHECK(
          launch_gemv(b, 32, 1, 32, &t, 1, false, false, configs[0], Stream{st, false}));
    });
    std::printf("launch floor (16 x 32 gemv, same timing): %.2f us\n", us);
  }

  std::vector<Row> rows;
  for (const Shape& s : kShapes) {
    if (std::find(shape_names.begin(), shape_names.end(), s.name) == shape_names.end()) continue;
    const size_t w_elems = static_cast<size_t>(s.rows) * s.k;
    DeviceBuffer w(w_elems * 2 * kChain), x(static_cast<size_t>(kMaxN) * s.k * 2);
    DeviceBuffer out(static_cast<size_t>(kMaxN) * s.rows * 4),
        ref(static_cast<size_t>(kMaxN) * s.rows * 4);
    auto weights = [&](int i) { return static_cast<const char*>(w.p) + i * w_elems * 2; };
    // Weights of Llama's scale (|w| < 0.05), activations of order one; never zeros.
    LSERVE_CUDA_CHECK(launch_random(static_cast<bf16*>(w.p), static_cast<int64_t>(w_elems) * kChain,
                                    1234, 0.05f, st));
    LSERVE_CUDA_CHECK(launch_random(static_cast<bf16*>(x.p), int64_t{kMaxN} * s.k, 5678, 1.0f, st));
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    for (int n : ns) {
      std::fprintf(stderr, "%s n=%d ...\n", s.name, n);
      const size_t out_elems = static_cast<size_t>(n) * s.rows;
      const double bytes = 2.0 * (static_cast<double>(w_elems) + n * s.k + out_elems);
      Row row;
      row.shape = s.name;
      row.n = n;
      CublasLt::Plan plan_f32, plan_bf16;
      cublas.plan(plan_f32, n, s.rows, s.k, true);
      cublas.plan(plan_bf16, n, s.rows, s.k, false);
      cublas.run(plan_f32, x.p, w.p, ref.p, st);
      LSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
      const auto ref_h = download_f32(ref.p, out_elems);
      const double cublas_us =
          median_us(st, flush, reps, [&] { cublas.run(plan_bf16, x.p, w.p, out.p, st); });
      row.cublas_tbs = bytes / cublas_us * 1e-6;
      auto gemv = [&](const GemvConfig& c, int i, bool out_f32, bool pdl) {
        const GemvTarget t{weights(i), s.rows, out.p, s.rows};
        LSERVE_CUDA_CHECK(launch_gemv(x.p, s.k, n, s.k, &t, 1, out_f32, false, c, Stream{st, pdl}));
      };
      for (const GemvConfig& c : configs) {
        gemv(c, 0, true, false);
        LSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
        row.max_err = std::max(row.max_err, rel_l2(download_f32(out.p, out_elems), ref_h));
        const double us = median_us(st, flush, reps, [&] { gemv(c, 0, false, false); });
        const double tbs = bytes / us * 1e-6;
        row.tbs.push_back(tbs);
        if (tbs > row.best_tbs) {
          row.best_tbs = tbs;
          row.best_us = us;
          row.best = c;
        }
      }
      const double chain_bytes = bytes * kChain * 1e-6;
      row.chain_cublas = chain_bytes / median_us(st, flush, reps, [&] {
                           for (int i = 0; i < kChain; ++i) {
                             cublas.run(plan_bf16, x.p, weights(i), out.p, st);
                           }
                         });
      for (bool pdl : {false, true}) {
        (pdl ? row.chain_pdl : row.chain_gemv) = chain_bytes / median_us(st, flush, reps, [&] {
                                                   for (int i = 0; i < kChain; ++i)
                                                     gemv(row.best, i, false, pdl);
                                                 });
      }
      rows.push_back(row);
    }
  }

  std::printf(
      "\n| shape | n | cuBLAS TB/s | best gemv | gemv us | gemv TB/s | ratio | chain of %d, TB/s: "
      "cuBLAS | gemv | gemv + PDL | ratio | max rel err |\n",
      kChain);
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::printf("| %s | %d | %.2f | %s | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.1e |\n",
                r.shape.c_str(), r.n, r.cublas_tbs, config_name(r.best).c_str(), r.best_us,
                r.best_tbs, r.best_tbs / r.cublas_tbs, r.chain_cublas, r.chain_gemv, r.chain_pdl,
                r.chain_pdl / r.chain_cublas, r.max_err);
  }
  std::printf("\n| shape | n |");
  for (const GemvConfig& c : configs) std::printf(" %s |", config_name(c).c_str());
  std::printf("\n|---|---|");
  for (size_t i = 0; i < configs.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const Row& r : rows) {
    std::printf("| %s | %d |", r.shape.c_str(), r.n);
    for (double t : r.tbs) std::printf(" %.2f |", t);
    std::printf("\n");
  }
  cudaStreamDestroy(st);
  // bf16 inputs, f32 sums in a different order: far under 1e-3 unless something is wrong.
  bool ok = true;
  for (const Row& r : rows) ok = ok && r.max_err < 1e-3;
  if (!ok) std::fprintf(stderr, "gemv_bench: a configuration disagrees with cuBLAS\n");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace lserve::cuda

int main(int argc, char** argv) {
  CLI::App app{"Skinny bf16 GEMM (decode projections): gemv configurations against cuBLASLt"};
  std::vector<int> ns = {1, 2, 4, 8, 16, 32};
  std::vector<std::string> shapes = {"qkv", "o", "gate_up", "down", "lm_head"};
  int reps = 30;
  std::string flush = "memset";
  app.add_option("--n", ns, "Token counts (1..32)")->delimiter(',')->check(CLI::Range(1, 32));
  app.add_option("--shapes", shapes, "Shapes: qkv, o, gate_up, down, lm_head")
      ->delimiter(',')
      ->check(CLI::IsMember({"qkv", "o", "gate_up", "down", "lm_head"}));
  app.add_option("--reps", reps, "Timed calls per case (median)")->check(CLI::Range(20, 100000));
  app.add_option("--flush", flush, "L2 flush before each call: memset (dirty L2) or read (clean)")
      ->check(CLI::IsMember({"memset", "read"}));
  CLI11_PARSE(app, argc, argv);
  try {
    return lserve::cuda::run(
        ns, shapes, reps,
        flush == "read" ? lserve::cuda::Flush::kRead : lserve::cuda::Flush::kMemset);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemv_bench: %s\n", e.what());
    return 1;
  }
}
