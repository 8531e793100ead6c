// The stream kernels are launched on, and whether they may use programmatic dependent launch.
#pragma once

#include <cuda_runtime.h>

namespace lserve::cuda {

// pdl: kernels go out with programmatic stream serialization, so a kernel's CTAs are scheduled
// during the previous kernel's tail and wait in griddep_wait() (kernels/common.cuh) for its
// results; in a decode step of ~300 small launches this hides most of the gaps between them.
// Only kernels that call griddep_wait in every CTA may be launched this way.
struct Stream {
  cudaStream_t handle = nullptr;
  bool pdl = false;
};

}  // namespace lserve::cuda
