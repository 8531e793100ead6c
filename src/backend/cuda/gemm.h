// bf16 GEMMs: out[n, o] = x[n, i] * w[o, i]^T with f32 accumulation. Large n through cuBLASLt
// (algorithm chosen once per shape by its heuristic); decode sizes (n <= 32) by whichever of
// cuBLASLt and the skinny-GEMM kernel (gemv.h) measured faster for that shape, timed once on
// first use with the L2 flushed (weights come from HBM in a real step).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/gemv.h"

namespace lserve::cuda {

class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x [n, k] bf16, w [m, k] bf16 (row-major), out [n, m] bf16 or f32; accumulate: out += x w^T.
  void run(const void* x, const void* w, void* out, bool out_f32, bool accumulate, int64_t n,
           int64_t m, int64_t k, cudaStream_t stream);
  // Every target's out = x w^T (ld_out = its rows) from one x [n, k]: one launch where the
  // skinny kernel serves the shape.
  void run_many(const void* x, int64_t n, int64_t k, std::span<const GemvTarget> targets,
                bool out_f32, bool accumulate, cudaStream_t stream);

  // Whether kernels use programmatic dependent launch (LSERVE_PDL=0: ordinary launches).
  bool pdl() const { return use_pdl_; }

  // What each tuned shape chose, for logs: "n-tiles x k x rows...: config".
  std::vector<std::string> choices() const;

 private:
  struct Plan;
  const Plan& plan_for(int64_t n, int64_t m, int64_t k, bool out_f32);
  void cublas(const void* x, const void* w, void* out, bool out_f32, bool accumulate, int64_t n,
              int64_t m, int64_t k, cudaStream_t stream);
  // The skinny configuration (index into gemv_configs()) for this shape, or -1 for cuBLASLt.
  int choose(const void* x, int64_t n, int64_t k, std::span<const GemvTarget> targets, bool out_f32,
             bool accumulate, cudaStream_t stream);
  float time_candidate(int config, const void* x, int64_t n, int64_t k,
                       std::span<const GemvTarget> targets, bool out_f32, bool accumulate,
                       void* flush, cudaStream_t stream);

  void* handle_ = nullptr;     // cublasLtHandle_t
  void* workspace_ = nullptr;  // device
  size_t workspace_bytes_ = 32u << 20;
  std::map<std::tuple<int64_t, int64_t, int64_t, bool>, Plan*> plans_;
  using TuneKey = std::tuple<int, int64_t, bool, bool, std::vector<int64_t>>;
  std::map<TuneKey, int> choices_;
  bool use_gemv_ = true;  // LSERVE_GEMV=0: cuBLASLt only
  bool use_pdl_ = true;   // LSERVE_PDL=0: ordinary launches
};

}  // namespace lserve::cuda
