// A bump allocator over one backend buffer for a step's activations. The same sequence of
// allocations gets the same addresses every time (what a recorded CUDA graph needs), and a step
// costs no allocator work.
#pragma once

#include <cstdint>

#include "backend/backend.h"

namespace lserve {

class Workspace {
 public:
  Workspace(Backend& backend, int64_t bytes);

  // Forgets every allocation (the buffer is reused by the next step).
  void reset() { used_ = 0; }
  // A view of the next free bytes; throws Error when the buffer is too small.
  Tensor alloc(DType dtype, int64_t rows, int64_t cols);
  int64_t capacity() const { return capacity_; }

  // Bytes `alloc` takes for a tensor (its size rounded up to the alignment).
  static int64_t footprint(DType dtype, int64_t rows, int64_t cols);

 private:
  static constexpr int64_t kAlign = 256;
  Tensor buffer_;
  int64_t capacity_ = 0;
  int64_t used_ = 0;
};

}  // namespace lserve
