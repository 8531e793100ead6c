// Skinny bf16 GEMM for decode (kernels/gemv.cuh): out[t, o] (+)= sum_k x[t, k] * w[o, k] for
// n <= 32 token rows, f32 accumulation, written to bf16 or f32. Reaches close to the copy bandwidth
// on the weight read, where cuBLAS stays well under it at these shapes. Plain C++ (no device code).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/stream.h"

namespace lserve::cuda {

// One weight matrix and its output: w [rows, k] bf16 row-major (16-byte aligned, k % 8 == 0);
// out[t, o] at out + t * ld_out + o (ld_out >= rows), bf16 or f32 as the launch says.
struct GemvTarget {
  const void* w;
  int64_t rows;
  void* out;
  int64_t ld_out;
};

// Kernel policy: mt m-tiles of 16 rows per warp (each x fragment feeds all of them), warps per
// CTA (splitting k), unroll: k blocks of 32 whose loads each warp has in flight before their MMAs.
// Only the combinations gemv_configs() lists are built.
struct GemvConfig {
  int mt;
  int warps;
  int unroll;
};

// The configurations worth timing for a shape (the autotuner's candidates); the first is the best
// measured at n <= 8 on most Llama-3-8B shapes (H200). In chains of programmatic dependent
// launches, configurations whose consecutive grids fit on the GPU together gain most.
const std::vector<GemvConfig>& gemv_configs();

// x [n, ldx] bf16 (16-byte aligned, ldx % 8 == 0, ldx >= k), 1 <= n <= 32, k % 32 == 0; up to 4
// targets share x and k. Outputs must not overlap x, the weights or each other. accumulate: out =
// out + x w^T with one rounding (e.g. the residual stream), else out = x w^T. With st.pdl the
// weight fetch overlaps the previous kernel's tail; x and out are touched only once that kernel
// has finished. Returns cudaErrorInvalidValue for
// unsupported shapes or configurations, else the launch status.
cudaError_t launch_gemv(const void* x, int64_t ldx, int n, int64_t k, const GemvTarget* targets,
                        int n_targets, bool out_f32, bool accumulate, const GemvConfig& cfg,
                        Stream st);

}  // namespace lserve::cuda
