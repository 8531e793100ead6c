#include "backend/cuda/gemm.h"

#include <cublasLt.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_check.h"
#include "core/log.h"

#define LSERVE_CUBLAS_CHECK(expr)                                                                \
  do {                                                                                           \
    const cublasStatus_t st_ = (expr);                                                           \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                            \
      ::lserve::fail("cuBLASLt error {} in {} at {}:{}", static_cast<int>(st_), #expr, __FILE__, \
                     __LINE__);                                                                  \
  } while (0)

namespace lserve::cuda {

// Row-major out[n, m] = x[n, k] w[m, k]^T is column-major out^T[m, n] = w^T... i.e. with
// column-major views A = w as [k, m] (transposed in the op), B = x as [k, n], C = out as [m, n].
struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

Gemm::Gemm() {
  const char* gemv = std::getenv("LSERVE_GEMV");
  use_gemv_ = gemv == nullptr || std::strcmp(gemv, "0") != 0;
  const char* pdl = std::getenv("LSERVE_PDL");
  use_pdl_ = pdl == nullptr || std::strcmp(pdl, "0") != 0;
  cublasLtHandle_t h;
  LSERVE_CUBLAS_CHECK(cublasLtCreate(&h));
  handle_ = h;
  LSERVE_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

Gemm::~Gemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatmulDescDestroy(p->op);
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    delete p;
  }
  cudaFree(workspace_);
  cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

const Gemm::Plan& Gemm::plan_for(int64_t n, int64_t m, int64_t k, bool out_f32) {
  const auto key = std::make_tuple(n, m, k, out_f32);
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
  auto* p = new Plan;
  LSERVE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  LSERVE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  LSERVE_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  LSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, k, m, k));
  LSERVE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, k, n, k));
  LSERVE_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&p->c, out_f32 ? CUDA_R_32F : CUDA_R_16BF, m, n, m));
  cublasLtMatmulPreference_t pref;
  LSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  LSERVE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), p->op, p->a, p->b,
                                     p->c, p->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  LSERVE_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
               "cuBLASLt has no algorithm for a {}x{}x{} bf16 GEMM", n, m, k);
  p->algo = result.algo;
  plans_[key] = p;
  return *p;
}

void Gemm::cublas(const void* x, const void* w, void* out, bool out_f32, bool accumulate, int64_t n,
                  int64_t m, int64_t k, cudaStream_t stream) {
  const Plan& p = plan_for(n, m, k, out_f32);
  // C = D = out: with beta 1 cuBLASLt adds the product to what out holds (in place).
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  LSERVE_CUBLAS_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.op, &alpha, w, p.a,
                                     x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                                     workspace_bytes_, stream));
}

void Gemm::run(const void* x, const void* w, void* out, bool out_f32, bool accumulate, int64_t n,
               int64_t m, int64_t k, cudaStream_t stream) {
  const GemvTarget t{w, m, out, m};
  run_many(x, n, k, {&t, 1}, out_f32, accumulate, stream);
}

void Gemm::run_many(const void* x, int64_t n, int64_t k, std::span<const GemvTarget> targets,
                    bool out_f32, bool accumulate, cudaStream_t stream) {
  const int config = choose(x, n, k, targets, out_f32, accumulate, stream);
  if (config >= 0) {
    LSERVE_CUDA_CHECK(launch_gemv(x, k, static_cast<int>(n), k, targets.data(),
                                  static_cast<int>(targets.size()), out_f32, accumulate,
                                  gemv_configs()[config], Stream{stream, use_pdl_}));
    return;
  }
  for (const GemvTarget& t : targets) {
    cublas(x, t.w, t.out, out_f32, accumulate, n, t.rows, k, stream);
  }
}

int Gemm::choose(const void* x, int64_t n, int64_t k, std::span<const GemvTarget> targets,
                 bool out_f32, bool accumulate, cudaStream_t stream) {
  // The skinny kernel's limits: 1..32 rows, k a multiple of 32, 16-byte aligned rows, 4 targets.
  const bool fits = use_gemv_ && n >= 1 && n <= 32 && k % 32 == 0 && targets.size() <= 4 &&
                    reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                    std::all_of(targets.begin(), targets.end(), [](const GemvTarget& t) {
                      return reinterpret_cast<uintptr_t>(t.w) % 16 == 0;
                    });
  if (!fits) return -1;
  std::vector<int64_t> rows;
  for (const GemvTarget& t : targets) rows.push_back(t.rows);
  const TuneKey key{static_cast<int>((n + 7) / 8), k, out_f32, accumulate, rows};
  if (auto it = choices_.find(key); it != choices_.end()) return it->second;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  LSERVE_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
  // A recording cannot time anything; its steps were run (and tuned) directly first, so this
  // only happens to shapes never seen outside one: take the usually best configuration.
  if (capturing != cudaStreamCaptureStatusNone) return 0;

  // Time cuBLASLt and every configuration on scratch outputs (the real ones may be accumulated
  // into), each call after a 256 MB write that evicts the weights from the 50 MB L2.
  constexpr size_t kFlushBytes = size_t{256} << 20;
  void* flush = nullptr;
  LSERVE_CUDA_CHECK(cudaMallocAsync(&flush, kFlushBytes, stream));
  std::vector<GemvTarget> scratch(targets.begin(), targets.end());
  std::vector<void*> outs;
  for (GemvTarget& t : scratch) {
    const size_t bytes = static_cast<size_t>(n) * t.ld_out * (out_f32 ? 4 : 2);
    LSERVE_CUDA_CHECK(cudaMallocAsync(&t.out, bytes, stream));
    LSERVE_CUDA_CHECK(cudaMemsetAsync(t.out, 0, bytes, stream));
    outs.push_back(t.out);
  }
  int best = -1;
  float best_ms = time_candidate(-1, x, n, k, scratch, out_f32, accumulate, flush, stream);
  std::string report = fmt::format("cuBLASLt {:.1f} us", best_ms * 1e3f);
  for (int c = 0; c < static_cast<int>(gemv_configs().size()); ++c) {
    const float ms = time_candidate(c, x, n, k, scratch, out_f32, accumulate, flush, stream);
    const GemvConfig& g = gemv_configs()[c];
    report += fmt::format(", gemv {}x{}x{} {:.1f} us", g.mt, g.warps, g.unroll, ms * 1e3f);
    if (ms < best_ms) {
      best_ms = ms;
      best = c;
    }
  }
  for (void* p : outs) LSERVE_CUDA_CHECK(cudaFreeAsync(p, stream));
  LSERVE_CUDA_CHECK(cudaFreeAsync(flush, stream));
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream));
  log::debug("GEMM n={} k={} rows={}: {} -> {}", n, k, fmt::join(rows, "+"), report,
             best < 0 ? "cuBLASLt" : "gemv");
  choices_.emplace(key, best);
  return best;
}

float Gemm::time_candidate(int config, const void* x, int64_t n, int64_t k,
                           std::span<const GemvTarget> targets, bool out_f32, bool accumulate,
                           void* flush, cudaStream_t stream) {
  constexpr int kReps = 7;
  constexpr size_t kFlushBytes = size_t{256} << 20;
  cudaEvent_t a, b;
  LSERVE_CUDA_CHECK(cudaEventCreate(&a));
  LSERVE_CUDA_CHECK(cudaEventCreate(&b));
  auto call = [&] {
    if (config < 0) {
      for (const GemvTarget& t : targets) {
        cublas(x, t.w, t.out, out_f32, accumulate, n, t.rows, k, stream);
      }
    } else {
      LSERVE_CUDA_CHECK(launch_gemv(x, k, static_cast<int>(n), k, targets.data(),
                                    static_cast<int>(targets.size()), out_f32, accumulate,
                                    gemv_configs()[config], Stream{stream, use_pdl_}));
    }
  };
  call();  // warm-up
  std::vector<float> ms;
  for (int r = 0; r < kReps; ++r) {
    LSERVE_CUDA_CHECK(cudaMemsetAsync(flush, r, kFlushBytes, stream));
    LSERVE_CUDA_CHECK(cudaEventRecord(a, stream));
    call();
    LSERVE_CUDA_CHECK(cudaEventRecord(b, stream));
    LSERVE_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    LSERVE_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::nth_element(ms.begin(), ms.begin() + kReps / 2, ms.end());
  return ms[kReps / 2];
}

std::vector<std::string> Gemm::choices() const {
  std::vector<std::string> out;
  for (const auto& [key, c] : choices_) {
    const auto& [tiles, k, f32, acc, rows] = key;
    out.push_back(fmt::format(
        "n<={} k={} rows={}{}: {}", tiles * 8, k, fmt::join(rows, "+"), acc ? " (+=)" : "",
        c < 0 ? std::string("cuBLASLt")
              : fmt::format("gemv {}x{}x{}", gemv_configs()[c].mt, gemv_configs()[c].warps,
                            gemv_configs()[c].unroll)));
  }
  return out;
}

}  // namespace lserve::cuda
