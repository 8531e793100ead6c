#include "backend/workspace.h"

#include "core/error.h"

namespace lserve {

Workspace::Workspace(Backend& backend, int64_t bytes)
    : buffer_(backend.alloc(DType::F32, 1, (bytes + kAlign) / 4)),
      capacity_((bytes + kAlign) / 4 * 4) {
  // Padding rows of recorded steps are read but never meaningfully written: start them at zero
  // rather than at whatever the memory held.
  backend.fill(buffer_, 0.0f);
}

int64_t Workspace::footprint(DType dtype, int64_t rows, int64_t cols) {
  const int64_t bytes = rows * cols * static_cast<int64_t>(dtype_size(dtype));
  return (bytes + kAlign - 1) / kAlign * kAlign;
}

Tensor Workspace::alloc(DType dtype, int64_t rows, int64_t cols) {
  // The buffer's own start may not be aligned on every backend: align from its address.
  const auto base = reinterpret_cast<uintptr_t>(buffer_.data);
  const int64_t skew = static_cast<int64_t>((kAlign - base % kAlign) % kAlign);
  const int64_t at = (used_ == 0 ? skew : used_);
  const int64_t need = footprint(dtype, rows, cols);
  LSERVE_CHECK(at + need <= capacity_,
               "step workspace of {} MiB is too small for a [{} x {}] tensor ({} MiB in use)",
               capacity_ >> 20, rows, cols, at >> 20);
  Tensor t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  t.data = static_cast<char*>(buffer_.data) + at;
  t.owner = buffer_.owner;
  used_ = at + need;
  return t;
}

}  // namespace lserve
