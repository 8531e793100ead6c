#include "backend/cuda/gemm.h"

#include <cublasLt.h>

#include "backend/cuda/cuda_check.h"

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

void Gemm::run(const void* x, const void* w, void* out, bool out_f32, int64_t n, int64_t m,
               int64_t k, cudaStream_t stream) {
  const Plan& p = plan_for(n, m, k, out_f32);
  const float alpha = 1.0f, beta = 0.0f;
  LSERVE_CUBLAS_CHECK(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.op, &alpha, w, p.a,
                                     x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                                     workspace_bytes_, stream));
}

}  // namespace lserve::cuda
