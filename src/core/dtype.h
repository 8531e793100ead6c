// Element types and the float conversions every backend and loader shares.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace lserve {

// F8E4M3: FP8 E4M3 ("e4m3fn") bytes, the native KV cache element of devices that store fp8.
enum class DType : uint8_t { F32, F16, BF16, I32, F8E4M3 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::I32:
      return 4;
    case DType::F8E4M3:
      return 1;
  }
  return 0;
}

std::string_view dtype_name(DType t);

inline float bits_to_f32(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint32_t f32_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits;
}

inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN stays NaN (quiet bit forced so truncation cannot make it Inf).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits = f32_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// IEEE half <-> float, exact for every half value (subnormals included).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace lserve
