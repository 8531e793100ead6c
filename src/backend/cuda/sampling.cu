#include "backend/cuda/kernels/sampling.cuh"
#include "backend/cuda/launch_kernel.cuh"
#include "backend/cuda/sampling_launch.h"

namespace lserve::cuda {

cudaError_t launch_sample(const float* logits, int64_t ld, int rows, const SampleRow* rows_dev,
                          const LogitEdit* edits_dev, SampledToken* out_dev, Stream st) {
  if (rows < 0 || ld < 1) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;  // an empty grid is a launch error, not an empty step
  return launch_kernel(sampling_kernel::sample_kernel, static_cast<unsigned>(rows),
                       sampling_kernel::kThreads, 0, st, logits, ld, rows_dev, edits_dev, out_dev);
}

}  // namespace lserve::cuda
