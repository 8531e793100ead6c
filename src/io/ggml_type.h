// The ggml tensor element types found in GGUF files and their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lserve {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};

struct GgmlTypeTraits {
  std::string_view name;
  int block_size;     // elements per block (1 for plain float types)
  size_t block_bytes;  // bytes per block
  bool can_dequantize;  // lserve has a dequantizer for it
};

// Traits of a type id read from a file; nullptr for ids lserve does not know.
const GgmlTypeTraits* ggml_type_traits(uint32_t type_id);
std::string_view ggml_type_name(GgmlType t);

}  // namespace lserve
