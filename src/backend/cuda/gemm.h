// bf16 GEMMs through cuBLASLt: out[n, o] = x[n, i] * w[o, i]^T with f32 accumulation, the
// algorithm chosen once per shape by cuBLASLt's heuristic and cached.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace lserve::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x [n, k] bf16, w [m, k] bf16 (row-major), out [n, m] bf16 or f32.
  void run(const void* x, const void* w, void* out, bool out_f32, int64_t n, int64_t m, int64_t k,
           cudaStream_t stream);

 private:
  struct Plan;
  const Plan& plan_for(int64_t n, int64_t m, int64_t k, bool out_f32);

  void* handle_ = nullptr;     // cublasLtHandle_t
  void* workspace_ = nullptr;  // device
  size_t workspace_bytes_ = 32u << 20;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Plan*> plans_;
};

}  // namespace lserve::cuda
