#include "backend/cuda/kernels/sampling.cuh"
#include "backend/cuda/sampling_launch.h"

namespace lserve::cuda {

cudaError_t launch_sample(const float* logits, int64_t ld, int rows, const SampleRow* rows_dev,
                          const LogitEdit* edits_dev, SampledToken* out_dev, cudaStream_t st) {
  if (rows < 0 || ld < 1) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;  // an empty grid is a launch error, not an empty step
  sampling_kernel::sample_kernel<<<rows, sampling_kernel::kThreads, 0, st>>>(logits, ld, rows_dev,
                                                                             edits_dev, out_dev);
  return cudaGetLastError();
}

}  // namespace lserve::cuda
