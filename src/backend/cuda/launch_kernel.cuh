// One launch path for the custom kernels: grid, block, dynamic shared memory and the stream's
// programmatic-dependent-launch setting (stream.h). nvcc only.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/stream.h"

namespace lserve::cuda {

template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Stream st,
                          Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t lc{};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = st.handle;
  lc.attrs = attr;
  lc.numAttrs = st.pdl ? 1 : 0;
  const cudaError_t err = cudaLaunchKernelEx(&lc, kernel, std::forward<Args>(args)...);
  if (err != cudaSuccess) cudaGetLastError();  // returned to the caller, not left for others
  return err;
}

}  // namespace lserve::cuda
