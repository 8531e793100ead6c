// CUDA error checks that throw lserve::Error naming the call, file and line: a failed CUDA call is
// never ignored and never silently continues.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define LSERVE_CUDA_CHECK(expr)                                                          \
  do {                                                                                   \
    const cudaError_t lserve_err_ = (expr);                                              \
    if (lserve_err_ != cudaSuccess)                                                      \
      ::lserve::fail("CUDA error {} ({}) in {} at {}:{}", static_cast<int>(lserve_err_), \
                     cudaGetErrorString(lserve_err_), #expr, __FILE__, __LINE__);        \
  } while (0)
