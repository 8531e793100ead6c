#include "io/dequant.h"

#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace lserve {
namespace {

// Block layouts of the GGUF format; all fields little-endian, scales as IEEE half.
constexpr int kQK = 32;    // elements per block of the classic quants
constexpr int kQKK = 256;  // elements per super-block of the K-quants

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

float load_half(const uint8_t* p) { return f16_to_f32(load_u16(p)); }

// Q4_0: half d | 16 bytes of nibbles. Low nibbles are elements 0..15, high nibbles 16..31.
void dequant_q4_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0x0f) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

// Q4_1: half d | half m | 16 bytes of nibbles; value = q * d + m.
void dequant_q4_1(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = load_half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0x0f) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: like Q4 plus a 32-bit word holding the fifth bit of each element (bit j for
// element j).
template <bool kHasMin>
void dequant_q5(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const float m = kHasMin ? load_half(b + 2) : 0.0f;
  const uint8_t* p = b + (kHasMin ? 4 : 2);
  uint32_t qh;
  std::memcpy(&qh, p, 4);
  const uint8_t* qs = p + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    const int hi0 = static_cast<int>((qh >> j) & 1u) << 4;
    const int hi1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
    const int q0 = (qs[j] & 0x0f) | hi0;
    const int q1 = (qs[j] >> 4) | hi1;
    if constexpr (kHasMin) {
      y[j] = static_cast<float>(q0) * d + m;
      y[j + kQK / 2] = static_cast<float>(q1) * d + m;
    } else {
      y[j] = static_cast<float>(q0 - 16) * d;
      y[j + kQK / 2] = static_cast<float>(q1 - 16) * d;
    }
  }
}

// Q8_0: half d | 32 signed bytes.
void dequant_q8_0(const uint8_t* b, float* y) {
  const float d = load_half(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// Q4_K's 12 scale bytes pack eight 6-bit (scale, min) pairs, one per 32-element sub-block.
void q4k_scale_min(int j, const uint8_t* s, int* scale, int* min) {
  if (j < 4) {
    *scale = s[j] & 63;
    *min = s[j + 4] & 63;
  } else {
    *scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q4_K: half d | half dmin | 12 scale bytes | 128 bytes of nibbles. Each 64 elements use 32 bytes:
// low nibbles are the first 32 elements (sub-block 2i), high nibbles the next 32 (2i+1).
// Q5_K is the same with a 32-byte plane of fifth bits (`qh`, null for Q4_K) before the nibbles:
// chunk c takes bit 2c of qh[l] for its low-nibble element l and bit 2c+1 for the high one.
void dequant_q45_k(const uint8_t* b, const uint8_t* qh, const uint8_t* q, float* y) {
  const float d = load_half(b);
  const float dmin = load_half(b + 2);
  const uint8_t* scales = b + 4;
  for (int chunk = 0; chunk < 4; ++chunk) {
    int sc0, m0, sc1, m1;
    q4k_scale_min(2 * chunk, scales, &sc0, &m0);
    q4k_scale_min(2 * chunk + 1, scales, &sc1, &m1);
    const float d0 = d * static_cast<float>(sc0), off0 = dmin * static_cast<float>(m0);
    const float d1 = d * static_cast<float>(sc1), off1 = dmin * static_cast<float>(m1);
    for (int l = 0; l < 32; ++l) {
      const int hi0 = qh ? ((qh[l] >> (2 * chunk)) & 1) << 4 : 0;
      const int hi1 = qh ? ((qh[l] >> (2 * chunk + 1)) & 1) << 4 : 0;
      y[l] = d0 * static_cast<float>((q[l] & 0x0f) | hi0) - off0;
      y[32 + l] = d1 * static_cast<float>((q[l] >> 4) | hi1) - off1;
    }
    y += 64;
    q += 32;
  }
}

void dequant_q4_k(const uint8_t* b, float* y) { dequant_q45_k(b, nullptr, b + 16, y); }

// Q5_K: half d | half dmin | 12 scale bytes | 32 bytes of fifth bits | 128 bytes of nibbles.
void dequant_q5_k(const uint8_t* b, float* y) { dequant_q45_k(b, b + 16, b + 48, y); }

// Q2_K: 16 bytes of 4-bit (scale, min) pairs (scale low) | 64 bytes of 2-bit quants | half d |
// half dmin. Element i uses pair i/16; each 128-element half reads 32 bytes, the four 32-element
// quarters taking bit pairs 0-1, 2-3, 4-5, 6-7 of the same bytes. x = d*scale*q - dmin*min.
void dequant_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = load_half(b + 80);
  const float dmin = load_half(b + 82);
  for (int i = 0; i < kQKK; ++i) {
    const int half = i / 128, quarter = (i % 128) / 32, l = i % 32;
    const int q = (qs[32 * half + l] >> (2 * quarter)) & 3;
    const float dl = d * static_cast<float>(scales[i / 16] & 0x0f);
    const float ml = dmin * static_cast<float>(scales[i / 16] >> 4);
    y[i] = dl * static_cast<float>(q) - ml;
  }
}

// Q3_K's 12 scale bytes hold sixteen 6-bit scales, stored plus 32: the low 4 bits of scale j are
// a nibble of byte j%8 (low for j<8), the high 2 bits are bits 2*(j/4).. of byte 8 + j%4.
int q3k_scale(int j, const uint8_t* s) {
  const int low = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
  const int high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Q3_K: 32 bytes of high bits | 64 bytes of 2-bit quants | 12 scale bytes | half d. The 2-bit
// quants are laid out as Q2_K's; element i = 128h + 32k + l takes its third bit from bit 4h+k of
// hmask[l], and a clear bit means q - 4 (the quant is signed, -4..3). x = d*scale*q.
void dequant_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* scales = b + 96;
  const float d = load_half(b + 108);
  for (int i = 0; i < kQKK; ++i) {
    const int half = i / 128, quarter = (i % 128) / 32, l = i % 32;
    const int low = (qs[32 * half + l] >> (2 * quarter)) & 3;
    const bool high = (hmask[l] >> (4 * half + quarter)) & 1;
    const int q = low - (high ? 0 : 4);
    const float dl = d * static_cast<float>(q3k_scale(i / 16, scales));
    y[i] = dl * static_cast<float>(q);
  }
}

// Q6_K: 128 bytes low nibbles | 64 bytes of 2-bit high parts | 16 signed scales | half d.
// Each 128-element half uses 64 low-nibble bytes, 32 high bytes and 8 scales (one per 16).
void dequant_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_half(b + 208);
  for (int half = 0; half < 2; ++half) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

template <typename BlockFn>
void for_blocks(const void* src, float* dst, int64_t n, int block, size_t block_bytes, BlockFn fn) {
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t i = 0; i < n / block; ++i) fn(p + i * block_bytes, dst + i * block);
}

}  // namespace

void dequantize(GgmlType type, const void* src, float* dst, int64_t n) {
  const GgmlTypeTraits* tr = ggml_type_traits(static_cast<uint32_t>(type));
  LSERVE_CHECK(tr != nullptr && tr->can_dequantize, "no dequantizer for ggml type {}",
               ggml_type_name(type));
  LSERVE_CHECK(n >= 0 && n % tr->block_size == 0,
               "cannot dequantize {} elements of {}: not a multiple of {}", n, tr->name,
               tr->block_size);
  const auto* p = static_cast<const uint8_t*>(src);
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = load_half(p + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(p + 2 * i));
      return;
    case GgmlType::Q4_0:
      for_blocks(src, dst, n, kQK, 18, dequant_q4_0);
      return;
    case GgmlType::Q4_1:
      for_blocks(src, dst, n, kQK, 20, dequant_q4_1);
      return;
    case GgmlType::Q5_0:
      for_blocks(src, dst, n, kQK, 22, dequant_q5<false>);
      return;
    case GgmlType::Q5_1:
      for_blocks(src, dst, n, kQK, 24, dequant_q5<true>);
      return;
    case GgmlType::Q8_0:
      for_blocks(src, dst, n, kQK, 34, dequant_q8_0);
      return;
    case GgmlType::Q2_K:
      for_blocks(src, dst, n, kQKK, 84, dequant_q2_k);
      return;
    case GgmlType::Q3_K:
      for_blocks(src, dst, n, kQKK, 110, dequant_q3_k);
      return;
    case GgmlType::Q4_K:
      for_blocks(src, dst, n, kQKK, 144, dequant_q4_k);
      return;
    case GgmlType::Q5_K:
      for_blocks(src, dst, n, kQKK, 176, dequant_q5_k);
      return;
    case GgmlType::Q6_K:
      for_blocks(src, dst, n, kQKK, 210, dequant_q6_k);
      return;
    default:
      break;
  }
  fail("no dequantizer for ggml type {}", tr->name);
}

}  // namespace lserve
