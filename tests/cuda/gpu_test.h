// What every GPU test shares: skipping, saying why, where no CUDA device can be used (CI has
// none; a skip is not a pass).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"

// Skips the calling test (or fixture SetUp) when there is no usable GPU.
#define LSERVE_SKIP_WITHOUT_GPU()                                   \
  do {                                                              \
    std::string why_no_gpu;                                         \
    if (!lserve::cuda_device_available(&why_no_gpu)) {              \
      GTEST_SKIP() << "no CUDA device here (" << why_no_gpu << ")"; \
    }                                                               \
  } while (0)

namespace lserve::test {

// Device memory owned by a test (kernel-level tests that bypass the backend's allocator).
struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { LSERVE_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    LSERVE_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> download(size_t n) const {
    std::vector<T> host(n);
    LSERVE_CUDA_CHECK(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

}  // namespace lserve::test
