// What every GPU test shares: skipping, saying why, where no CUDA device can be used (CI has
// none; a skip is not a pass).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "backend/cuda/cuda_backend.h"

// Skips the calling test (or fixture SetUp) when there is no usable GPU.
#define LSERVE_SKIP_WITHOUT_GPU()                                   \
  do {                                                              \
    std::string why_no_gpu;                                         \
    if (!lserve::cuda_device_available(&why_no_gpu)) {              \
      GTEST_SKIP() << "no CUDA device here (" << why_no_gpu << ")"; \
    }                                                               \
  } while (0)
