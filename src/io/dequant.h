// Dequantization of GGUF block formats to f32 (the layouts of ggml's reference implementation).
#pragma once

#include <cstdint>

#include "io/ggml_type.h"

namespace lserve {

// Converts `n` elements stored as `type` at `src` to f32 at `dst`. `n` must be a multiple of the
// type's block size; throws Error for types without a dequantizer.
void dequantize(GgmlType type, const void* src, float* dst, int64_t n);

}  // namespace lserve
