// A 2-D tensor handle (rows x cols, row-major, contiguous) owned by a backend. Activations are
// [tokens, features]; weights are [out_features, in_features] as in PyTorch; 1-D tensors have one
// row. The data pointer is host memory on the CPU backend and device memory on CUDA.
#pragma once

#include <cstdint>
#include <memory>

#include "core/dtype.h"

namespace lserve {

struct Tensor {
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  void* data = nullptr;
  std::shared_ptr<void> owner;  // keeps the allocation alive; null for views

  int64_t numel() const { return rows * cols; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }

  template <typename T>
  T* as() const {
    return static_cast<T*>(data);
  }
  // Rows [first, first + count) as a view sharing this tensor's memory.
  Tensor row_view(int64_t first, int64_t count) const {
    Tensor t = *this;
    t.rows = count;
    t.data = static_cast<char*>(data) + first * cols * static_cast<int64_t>(dtype_size(dtype));
    return t;
  }
};

}  // namespace lserve
