// Dequantizers and float conversions. Each block format is rebuilt here from ggml's reference
// layout by an independent encoder: pick random quantized integers and scales, pack them, and
// compute the expected floats straight from the integers. Every product in these formats is exact
// in f32 (at most 11 + 7 + 6 significant bits), so the comparison is bit-exact; the only rounding
// is the one addition of a min/offset, done here in f32 like the format defines it.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gguf_writer.h"
#include "io/dequant.h"
#include "io/ggml_type.h"
#include "model/model.h"
#include "model/model_loader.h"
#include "test_util.h"

namespace lserve {
namespace {

// ---- references, written without src/core/dtype ------------------------------------------

// IEEE binary16 value of `h` from its fields: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m if e == 0.
double half_ref(uint16_t h) {
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  double v;
  if (exp == 0) {
    v = std::ldexp(mant, -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(1024 + mant, exp - 25);
  }
  return (h & 0x8000) ? -v : v;
}

// The product of exact values, which the test relies on being representable in f32.
float exact_f32(double x) {
  const float f = static_cast<float>(x);
  EXPECT_EQ(static_cast<double>(f), x) << "test assumption broken: product not exact in f32";
  return f;
}

// A random finite half: every exponent (subnormals and the largest included) equally likely, so
// the dequantizers see tiny, huge and zero scales, not just "nice" ones.
uint16_t random_half(std::mt19937_64& rng) {
  const auto sign = static_cast<uint16_t>((rng() & 1) << 15);
  const auto exp = static_cast<uint16_t>(rng() % 31);
  const auto mant = static_cast<uint16_t>(rng() & 1023);
  return sign | static_cast<uint16_t>(exp << 10) | mant;
}

struct Encoded {
  std::vector<uint8_t> bytes;
  std::vector<float> values;
};

void put_u16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(v >> 8));
}

void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Quantized integers in [0, 2^bits): mostly uniform, with some blocks pinned to the extremes so
// the top bits (the 5th bit of Q5, the 2 high bits of Q6_K) are exercised in every pattern.
std::vector<int> random_q(std::mt19937_64& rng, int n, int bits) {
  std::vector<int> q(n);
  const int max = (1 << bits) - 1;
  const int mode = static_cast<int>(rng() % 8);
  for (auto& x : q) {
    x = mode == 0 ? max : mode == 1 ? 0 : static_cast<int>(rng() % (max + 1));
  }
  return q;
}

// Q4_0: half d | 16 bytes; byte j holds element j (low nibble) and j+16 (high); x = (q-8)*d.
void encode_q4_0(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng);
  const auto q = random_q(rng, 32, 4);
  put_u16(e.bytes, d);
  for (int j = 0; j < 16; ++j) e.bytes.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
  for (int j = 0; j < 32; ++j) e.values.push_back(exact_f32((q[j] - 8) * half_ref(d)));
}

// Q4_1: half d | half m | 16 bytes of nibbles as Q4_0; x = q*d + m.
void encode_q4_1(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng), m = random_half(rng);
  const auto q = random_q(rng, 32, 4);
  put_u16(e.bytes, d);
  put_u16(e.bytes, m);
  for (int j = 0; j < 16; ++j) e.bytes.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
  for (int j = 0; j < 32; ++j) {
    e.values.push_back(exact_f32(q[j] * half_ref(d)) + static_cast<float>(half_ref(m)));
  }
}

// Q5_0 / Q5_1: like Q4 with a u32 after the scale(s) whose bit j is bit 4 of element j;
// x = (q-16)*d, or q*d + m.
void encode_q5(std::mt19937_64& rng, Encoded& e, bool has_min) {
  const uint16_t d = random_half(rng), m = random_half(rng);
  const auto q = random_q(rng, 32, 5);
  put_u16(e.bytes, d);
  if (has_min) put_u16(e.bytes, m);
  uint32_t qh = 0;
  for (int j = 0; j < 32; ++j) qh |= static_cast<uint32_t>(q[j] >> 4) << j;
  put_u32(e.bytes, qh);
  for (int j = 0; j < 16; ++j) {
    e.bytes.push_back(static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4)));
  }
  for (int j = 0; j < 32; ++j) {
    e.values.push_back(has_min ? exact_f32(q[j] * half_ref(d)) + static_cast<float>(half_ref(m))
                               : exact_f32((q[j] - 16) * half_ref(d)));
  }
}

// Q8_0: half d | 32 int8; x = q*d (the whole int8 range, -128 included, is legal storage).
void encode_q8_0(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng);
  const auto q = random_q(rng, 32, 8);
  put_u16(e.bytes, d);
  for (int j = 0; j < 32; ++j) {
    const int v = q[j] - 128;
    e.bytes.push_back(static_cast<uint8_t>(static_cast<int8_t>(v)));
    e.values.push_back(exact_f32(v * half_ref(d)));
  }
}

// Q4_K: half d | half dmin | 12 bytes of eight 6-bit (scale, min) pairs | 128 bytes of nibbles.
// Element i is in sub-block i/32; 64-element chunk c uses bytes 32c..32c+31, low nibbles for its
// first 32 elements and high nibbles for the next 32. x = d*scale*q - dmin*min.
// Packs the 12 scale bytes of Q4_K / Q5_K: pairs 0..3 in the low 6 bits of bytes 0..3 (scale)
// and 4..7 (min); pairs 4..7 as nibbles of bytes 8..11 (scale low, min high) with their top two
// bits in bits 6..7 of bytes 0..3 (scale) and 4..7 (min).
void put_k_scales(Encoded& e, const std::vector<int>& scale, const std::vector<int>& min) {
  uint8_t s[12] = {};
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(scale[j]);
    s[j + 4] = static_cast<uint8_t>(min[j]);
  }
  for (int j = 4; j < 8; ++j) {
    s[j + 4] = static_cast<uint8_t>((scale[j] & 15) | ((min[j] & 15) << 4));
    s[j - 4] |= static_cast<uint8_t>((scale[j] >> 4) << 6);
    s[j] |= static_cast<uint8_t>((min[j] >> 4) << 6);
  }
  e.bytes.insert(e.bytes.end(), s, s + 12);
}

// Q4_K / Q5_K values: x = d*scale*q - dmin*min, pair i/32.
void put_k_values(Encoded& e, uint16_t d, uint16_t dmin, const std::vector<int>& scale,
                  const std::vector<int>& min, const std::vector<int>& q) {
  for (int i = 0; i < 256; ++i) {
    const int sb = i / 32;
    e.values.push_back(exact_f32(half_ref(d) * scale[sb] * q[i]) -
                       exact_f32(half_ref(dmin) * min[sb]));
  }
}

void encode_q4_k(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng), dmin = random_half(rng);
  const auto scale = random_q(rng, 8, 6), min = random_q(rng, 8, 6);
  const auto q = random_q(rng, 256, 4);
  put_u16(e.bytes, d);
  put_u16(e.bytes, dmin);
  put_k_scales(e, scale, min);
  uint8_t qs[128] = {};
  for (int i = 0; i < 256; ++i) {
    const int chunk = i / 64, r = i % 64;
    qs[chunk * 32 + r % 32] |= static_cast<uint8_t>(q[i] << (r < 32 ? 0 : 4));
  }
  e.bytes.insert(e.bytes.end(), qs, qs + 128);
  put_k_values(e, d, dmin, scale, min, q);
}

// Q5_K: half d | half dmin | 12 scale bytes as Q4_K | 32 bytes qh | 128 bytes of nibbles as
// Q4_K. Element i = 64c + r keeps its fifth bit in bit 2c (r < 32) or 2c+1 (r >= 32) of
// qh[r % 32].
void encode_q5_k(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng), dmin = random_half(rng);
  const auto scale = random_q(rng, 8, 6), min = random_q(rng, 8, 6);
  const auto q = random_q(rng, 256, 5);
  put_u16(e.bytes, d);
  put_u16(e.bytes, dmin);
  put_k_scales(e, scale, min);
  uint8_t qh[32] = {}, qs[128] = {};
  for (int i = 0; i < 256; ++i) {
    const int chunk = i / 64, r = i % 64;
    qs[chunk * 32 + r % 32] |= static_cast<uint8_t>((q[i] & 15) << (r < 32 ? 0 : 4));
    qh[r % 32] |= static_cast<uint8_t>((q[i] >> 4) << (2 * chunk + (r < 32 ? 0 : 1)));
  }
  e.bytes.insert(e.bytes.end(), qh, qh + 32);
  e.bytes.insert(e.bytes.end(), qs, qs + 128);
  put_k_values(e, d, dmin, scale, min, q);
}

// The 2-bit planes of Q2_K and Q3_K: element i = 128h + 32k + l is bits 2k..2k+1 of byte
// 32h + l.
void put_2bit_plane(Encoded& e, const std::vector<int>& q) {
  uint8_t qs[64] = {};
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    qs[32 * h + l] |= static_cast<uint8_t>((q[i] & 3) << (2 * k));
  }
  e.bytes.insert(e.bytes.end(), qs, qs + 64);
}

// Q2_K: 16 bytes (scale | min << 4), one per 16 elements | 64 bytes of 2-bit q | half d |
// half dmin. x = d*scale*q - dmin*min.
void encode_q2_k(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng), dmin = random_half(rng);
  const auto scale = random_q(rng, 16, 4), min = random_q(rng, 16, 4);
  const auto q = random_q(rng, 256, 2);
  for (int j = 0; j < 16; ++j) e.bytes.push_back(static_cast<uint8_t>(scale[j] | (min[j] << 4)));
  put_2bit_plane(e, q);
  put_u16(e.bytes, d);
  put_u16(e.bytes, dmin);
  for (int i = 0; i < 256; ++i) {
    e.values.push_back(exact_f32(half_ref(d) * scale[i / 16] * q[i]) -
                       exact_f32(half_ref(dmin) * min[i / 16]));
  }
}

// Q3_K: 32 bytes hmask | 64 bytes of 2-bit q | 12 bytes of sixteen 6-bit scales | half d. Each
// element is a 3-bit u; its low 2 bits go to the 2-bit plane, bit 2 to bit 4h+k of hmask[l]
// (element 128h + 32k + l). Scale j (stored plus 32) has its low nibble in byte j%8 (low nibble
// for j < 8) and its top two bits at bit 2(j/4) of byte 8 + j%4. x = d*(scale-32)*(u-4).
void encode_q3_k(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng);
  const auto u = random_q(rng, 256, 3);
  const auto sc = random_q(rng, 16, 6);
  uint8_t hmask[32] = {};
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    hmask[l] |= static_cast<uint8_t>((u[i] >> 2) << (4 * h + k));
  }
  e.bytes.insert(e.bytes.end(), hmask, hmask + 32);
  put_2bit_plane(e, u);
  uint8_t s[12] = {};
  for (int j = 0; j < 16; ++j) {
    s[j % 8] |= static_cast<uint8_t>((sc[j] & 15) << (j < 8 ? 0 : 4));
    s[8 + j % 4] |= static_cast<uint8_t>((sc[j] >> 4) << (2 * (j / 4)));
  }
  e.bytes.insert(e.bytes.end(), s, s + 12);
  put_u16(e.bytes, d);
  for (int i = 0; i < 256; ++i) {
    e.values.push_back(exact_f32(half_ref(d) * (sc[i / 16] - 32) * (u[i] - 4)));
  }
}

// Q6_K: 128 bytes ql | 64 bytes qh | 16 int8 scales | half d; element i has a 6-bit q (stored
// minus 32) and uses scale i/16. Halves h of 128 elements; within one, quarter k = (i%128)/32 and
// lane l = i%32: the low 4 bits go to ql[64h + l + 32(k%2)] (low nibble for k<2, high for k>=2),
// the high 2 bits to bits 2k..2k+1 of qh[32h + l]. x = d*scale*(q-32).
void encode_q6_k(std::mt19937_64& rng, Encoded& e) {
  const uint16_t d = random_half(rng);
  const auto q = random_q(rng, 256, 6);
  const auto sc_raw = random_q(rng, 16, 8);
  uint8_t ql[128] = {}, qh[64] = {};
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    ql[64 * h + l + 32 * (k % 2)] |= static_cast<uint8_t>((q[i] & 15) << (4 * (k / 2)));
    qh[32 * h + l] |= static_cast<uint8_t>((q[i] >> 4) << (2 * k));
  }
  e.bytes.insert(e.bytes.end(), ql, ql + 128);
  e.bytes.insert(e.bytes.end(), qh, qh + 64);
  std::vector<int> sc(16);
  for (int j = 0; j < 16; ++j) {
    sc[j] = sc_raw[j] - 128;
    e.bytes.push_back(static_cast<uint8_t>(static_cast<int8_t>(sc[j])));
  }
  put_u16(e.bytes, d);
  for (int i = 0; i < 256; ++i) {
    e.values.push_back(exact_f32(half_ref(d) * sc[i / 16] * (q[i] - 32)));
  }
}

using Encoder = std::function<void(std::mt19937_64&, Encoded&)>;

// Dequantizes `n_blocks` random blocks and compares bit for bit. The source is exactly as long as
// the blocks (ASan sees any over-read) and the destination has a guard tail that must survive.
void check_blocks(GgmlType type, int block_size, size_t block_bytes, const Encoder& encode) {
  std::mt19937_64 rng(test::test_seed());
  for (int n_blocks : {1, 3, 7, 1 + static_cast<int>(rng() % 40)}) {
    SCOPED_TRACE(testing::Message() << n_blocks << " blocks");
    Encoded e;
    for (int b = 0; b < n_blocks; ++b) encode(rng, e);
    ASSERT_EQ(e.bytes.size(), block_bytes * n_blocks) << "encoder writes the wrong block size";
    ASSERT_EQ(e.values.size(), static_cast<size_t>(block_size) * n_blocks);
    const float guard = std::bit_cast<float>(0x7fc0dead);
    std::vector<float> out(e.values.size() + 5, guard);
    dequantize(type, e.bytes.data(), out.data(), static_cast<int64_t>(e.values.size()));
    int mismatches = 0;
    for (size_t i = 0; i < e.values.size(); ++i) {
      if (std::bit_cast<uint32_t>(out[i]) != std::bit_cast<uint32_t>(e.values[i]) &&
          ++mismatches <= 5) {
        ADD_FAILURE() << "element " << i << " (block " << i / block_size << ", index "
                      << i % block_size << "): got " << out[i] << ", want " << e.values[i];
      }
    }
    EXPECT_EQ(mismatches, 0);
    for (size_t i = e.values.size(); i < out.size(); ++i) {
      EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), 0x7fc0deadu) << "wrote past n at " << i;
    }
    // A prefix of whole blocks converts just those blocks.
    if (n_blocks > 1) {
      std::vector<float> part(block_size + 1, guard);
      dequantize(type, e.bytes.data() + block_bytes * (n_blocks - 1) - block_bytes, part.data(),
                 block_size);
      EXPECT_EQ(std::memcmp(part.data(), e.values.data() + block_size * (n_blocks - 2),
                            block_size * sizeof(float)),
                0);
      EXPECT_EQ(std::bit_cast<uint32_t>(part.back()), 0x7fc0deadu);
    }
  }
}

TEST(Dequant, Q4_0BlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q4_0, 32, 18, encode_q4_0);
}
TEST(Dequant, Q4_1BlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q4_1, 32, 20, encode_q4_1);
}
TEST(Dequant, Q5_0BlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q5_0, 32, 22, [](auto& rng, auto& e) { encode_q5(rng, e, false); });
}
TEST(Dequant, Q5_1BlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q5_1, 32, 24, [](auto& rng, auto& e) { encode_q5(rng, e, true); });
}
TEST(Dequant, Q8_0BlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q8_0, 32, 34, encode_q8_0);
}
TEST(Dequant, Q4_KBlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q4_K, 256, 144, encode_q4_k);
}
TEST(Dequant, Q6_KBlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q6_K, 256, 210, encode_q6_k);
}
TEST(Dequant, Q2_KBlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q2_K, 256, 84, encode_q2_k);
}
TEST(Dequant, Q3_KBlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q3_K, 256, 110, encode_q3_k);
}
TEST(Dequant, Q5_KBlocksMatchTheReferenceLayout) {
  check_blocks(GgmlType::Q5_K, 256, 176, encode_q5_k);
}

// Random blocks (random bytes, finite random fp16 scales) dequantized by the gguf Python
// package's NumPy code (scripts/make-dequant-fixtures.py): a second, independent reading of
// ggml's layouts, compared bit for bit.
TEST(Dequant, MatchesTheGgufPythonPackage) {
  std::ifstream in(test::fixture_path("dequant_gguf.json"));
  ASSERT_TRUE(in.good()) << "missing fixture dequant_gguf.json";
  const auto fixture = nlohmann::json::parse(in);
  std::set<std::string> seen;
  for (const auto& t : fixture.at("types")) {
    const std::string name = t.at("type");
    SCOPED_TRACE(name);
    const auto type = static_cast<GgmlType>(t.at("id").get<uint32_t>());
    ASSERT_EQ(ggml_type_name(type), name);
    const std::string hex = t.at("bytes");
    std::vector<uint8_t> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    }
    const auto want = t.at("f32_bits").get<std::vector<uint32_t>>();
    const GgmlTypeTraits* tr = ggml_type_traits(static_cast<uint32_t>(type));
    ASSERT_EQ(bytes.size() / tr->block_bytes * tr->block_size, want.size());
    std::vector<float> got(want.size());
    dequantize(type, bytes.data(), got.data(), static_cast<int64_t>(got.size()));
    int mismatches = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::bit_cast<uint32_t>(got[i]) != want[i] && ++mismatches <= 5) {
        ADD_FAILURE() << "element " << i << ": got " << got[i] << ", gguf-py "
                      << std::bit_cast<float>(want[i]);
      }
    }
    EXPECT_EQ(mismatches, 0);
    seen.insert(name);
  }
  for (const char* name : {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q8_0"}) {
    EXPECT_TRUE(seen.count(name)) << "fixture lacks " << name;
  }
}

TEST(Dequant, PlainFloatTypesConvertEveryElement) {
  std::mt19937_64 rng(test::test_seed());
  const int n = 1 + static_cast<int>(rng() % 1000);
  // F32 is a copy: any bit pattern, NaN payloads included, must come through unchanged.
  std::vector<uint32_t> f32(n);
  for (auto& x : f32) x = static_cast<uint32_t>(rng());
  std::vector<float> out(n + 1, -1.0f);
  dequantize(GgmlType::F32, f32.data(), out.data(), n);
  EXPECT_EQ(std::memcmp(out.data(), f32.data(), n * 4), 0);
  EXPECT_EQ(out[n], -1.0f);

  std::vector<uint16_t> h(n);
  for (auto& x : h) x = static_cast<uint16_t>(rng());
  dequantize(GgmlType::F16, h.data(), out.data(), n);
  for (int i = 0; i < n; ++i) {
    const double want = half_ref(h[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[i])) << std::hex << h[i];
    } else {
      EXPECT_EQ(static_cast<double>(out[i]), want) << std::hex << h[i];
      EXPECT_EQ(std::signbit(out[i]), std::signbit(want)) << std::hex << h[i];
    }
  }
  dequantize(GgmlType::BF16, h.data(), out.data(), n);
  for (int i = 0; i < n; ++i) {
    // bf16 is the top half of an f32.
    EXPECT_EQ(std::bit_cast<uint32_t>(out[i]), static_cast<uint32_t>(h[i]) << 16) << i;
  }
  EXPECT_EQ(out[n], -1.0f);
}

TEST(Dequant, RejectsCountsThatAreNotWholeBlocks) {
  std::vector<uint8_t> src(4096, 0x11);
  std::vector<float> dst(2048);
  const std::pair<GgmlType, int> quants[] = {
      {GgmlType::Q4_0, 32},  {GgmlType::Q4_1, 32},  {GgmlType::Q5_0, 32},  {GgmlType::Q5_1, 32},
      {GgmlType::Q8_0, 32},  {GgmlType::Q2_K, 256}, {GgmlType::Q3_K, 256}, {GgmlType::Q4_K, 256},
      {GgmlType::Q5_K, 256}, {GgmlType::Q6_K, 256}};
  for (const auto& [type, block] : quants) {
    for (int64_t n :
         {int64_t{1}, int64_t{block - 1}, int64_t{block + 1}, int64_t{block + block / 2}}) {
      try {
        dequantize(type, src.data(), dst.data(), n);
        ADD_FAILURE() << ggml_type_name(type) << " accepted n = " << n;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(std::string(ggml_type_name(type))), std::string::npos)
            << e.what();
      }
    }
    EXPECT_NO_THROW(dequantize(type, src.data(), dst.data(), 0));
  }
}

TEST(Dequant, TypesWithoutADequantizerThrow) {
  std::vector<uint8_t> src(4096, 0x22);
  std::vector<float> dst(1024, 0.0f);
  // Q8_K and Q8_1 are ggml's intermediate formats for dot products; models do not store them.
  for (GgmlType type : {GgmlType::Q8_K, GgmlType::Q8_1}) {
    try {
      dequantize(type, src.data(), dst.data(), 256);
      ADD_FAILURE() << ggml_type_name(type) << " dequantized";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(ggml_type_name(type))), std::string::npos)
          << e.what();
    }
    EXPECT_FALSE(ggml_type_traits(static_cast<uint32_t>(type))->can_dequantize);
  }
  // Ids ggml dropped (Q4_2 = 4) or never had.
  for (uint32_t id : {4u, 5u, 16u, 999u}) {
    EXPECT_THROW(dequantize(static_cast<GgmlType>(id), src.data(), dst.data(), 32), Error) << id;
  }
  for (float x : dst) ASSERT_EQ(x, 0.0f) << "a rejected call wrote output";
}

// Negative counts are a caller bug, but the signature takes int64_t and F32 turns n into a
// size_t for memcpy, so today n = -1 copies ~2^64 bytes and crashes. Disabled until
// dequant.cpp checks n >= 0 (see the report with the proposed fix).
TEST(Dequant, RejectsNegativeCounts) {
  std::vector<uint8_t> src(4096, 0x33);
  std::vector<float> dst(1024, 0.0f);
  for (GgmlType type :
       {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q6_K}) {
    for (int64_t n : {int64_t{-1}, int64_t{-256}, std::numeric_limits<int64_t>::min()}) {
      EXPECT_THROW(dequantize(type, src.data(), dst.data(), n), Error)
          << ggml_type_name(type) << " n = " << n;
    }
  }
}

TEST(Dequant, BlockGeometryMatchesTheGgufSpecification) {
  // {id, name, elements per block, bytes per block} as ggml defines them.
  struct Row {
    uint32_t id;
    const char* name;
    int block;
    size_t bytes;
  };
  const Row rows[] = {{0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
                      {3, "Q4_1", 32, 20},    {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
                      {8, "Q8_0", 32, 34},    {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
                      {11, "Q3_K", 256, 110}, {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                      {14, "Q6_K", 256, 210}, {15, "Q8_K", 256, 292}, {30, "BF16", 1, 2}};
  for (const auto& r : rows) {
    const GgmlTypeTraits* t = ggml_type_traits(r.id);
    ASSERT_NE(t, nullptr) << r.name;
    EXPECT_EQ(t->name, r.name);
    EXPECT_EQ(t->block_size, r.block) << r.name;
    EXPECT_EQ(t->block_bytes, r.bytes) << r.name;
  }
  for (uint32_t id : {4u, 5u, 16u, 29u, 31u, 0xffffffffu}) EXPECT_EQ(ggml_type_traits(id), nullptr);
}

// ---- a model stored in K-quants ----------------------------------------------------------

// Random blocks of `type` whose fp16 scales are small finite values (2^-12 .. 2^-8), so a layer
// built from them stays in a sane numeric range.
std::vector<uint8_t> random_k_blocks(std::mt19937_64& rng, GgmlType type, uint64_t n) {
  struct HalfFields {
    GgmlType type;
    std::vector<size_t> offsets;
  };
  const HalfFields fields[] = {{GgmlType::Q2_K, {80, 82}},
                               {GgmlType::Q3_K, {108}},
                               {GgmlType::Q4_K, {0, 2}},
                               {GgmlType::Q5_K, {0, 2}},
                               {GgmlType::Q6_K, {208}}};
  const GgmlTypeTraits* tr = ggml_type_traits(static_cast<uint32_t>(type));
  std::vector<uint8_t> b(n / tr->block_size * tr->block_bytes);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  for (const auto& f : fields) {
    if (f.type != type) continue;
    for (size_t blk = 0; blk < b.size(); blk += tr->block_bytes) {
      for (size_t off : f.offsets) {
        const auto h = static_cast<uint16_t>(((3 + rng() % 4) << 10) | (rng() & 1023));
        b[blk + off] = static_cast<uint8_t>(h);
        b[blk + off + 1] = static_cast<uint8_t>(h >> 8);
      }
    }
  }
  return b;
}

// A GGUF whose projections and embedding are Q2_K/Q3_K/Q4_K/Q5_K/Q6_K loads and computes the same
// logits as the same model written with the dequantized values as F32 tensors: the loader takes
// every K-quant, with the right row geometry.
TEST(DequantModel, KQuantGgufRunsLikeItsF32Copy) {
  std::mt19937_64 rng(test::test_seed());
  constexpr int kVocab = 64;
  std::vector<test::GgufVal> tokens;
  for (int i = 0; i < kVocab; ++i) tokens.push_back(test::gguf_str("t" + std::to_string(i)));
  test::GgufSpec quant;
  quant.kvs = {{"general.architecture", test::gguf_str("llama")},
               {"llama.block_count", test::gguf_u32(1)},
               {"llama.embedding_length", test::gguf_u32(256)},
               {"llama.attention.head_count", test::gguf_u32(4)},
               {"llama.attention.head_count_kv", test::gguf_u32(2)},
               {"llama.feed_forward_length", test::gguf_u32(512)},
               {"llama.context_length", test::gguf_u32(256)},
               {"llama.attention.layer_norm_rms_epsilon", test::gguf_f32(1e-5f)},
               {"tokenizer.ggml.model", test::gguf_str("gpt2")},
               {"tokenizer.ggml.tokens", test::gguf_array(test::kGgufString, tokens)},
               {"tokenizer.ggml.merges", test::gguf_array(test::kGgufString, {})}};
  const std::vector<float> ones(256, 1.0f);
  auto f32_tensor = [](std::string name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    test::GgufTensorSpec t{std::move(name), std::move(dims), 0, {}, {}};
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    t.data.assign(p, p + v.size() * 4);
    return t;
  };
  const std::tuple<const char*, uint64_t, uint64_t, GgmlType> quantized[] = {
      {"token_embd.weight", 256, kVocab, GgmlType::Q5_K},
      {"blk.0.attn_q.weight", 256, 256, GgmlType::Q2_K},
      {"blk.0.attn_k.weight", 256, 128, GgmlType::Q3_K},
      {"blk.0.attn_v.weight", 256, 128, GgmlType::Q5_K},
      {"blk.0.attn_output.weight", 256, 256, GgmlType::Q4_K},
      {"blk.0.ffn_gate.weight", 256, 512, GgmlType::Q2_K},
      {"blk.0.ffn_up.weight", 256, 512, GgmlType::Q3_K},
      {"blk.0.ffn_down.weight", 512, 256, GgmlType::Q6_K}};
  test::GgufSpec plain = quant;
  for (const char* norm :
       {"output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"}) {
    quant.tensors.push_back(f32_tensor(norm, {256}, ones));
    plain.tensors.push_back(f32_tensor(norm, {256}, ones));
  }
  for (const auto& [name, cols, rows, type] : quantized) {
    test::GgufTensorSpec t{name, {cols, rows}, static_cast<uint32_t>(type), {}, {}};
    t.data = random_k_blocks(rng, type, cols * rows);
    std::vector<float> values(cols * rows);
    dequantize(type, t.data.data(), values.data(), static_cast<int64_t>(values.size()));
    quant.tensors.push_back(std::move(t));
    plain.tensors.push_back(f32_tensor(name, {cols, rows}, values));
  }
  test::TempFile quant_file("kquant.gguf", test::build_gguf(quant).bytes);
  test::TempFile plain_file("kquant_f32.gguf", test::build_gguf(plain).bytes);

  CpuBackend backend(2);
  auto logits_of = [&](const std::string& path) {
    LoadedModel m = load_model(path, backend, {});
    auto model = make_model(m.config, std::move(m.weights));
    return test::sequence_logits(*model, backend, {1, 5, 9, 33, 2, 63, 7}, 3);
  };
  const auto a = logits_of(quant_file.path());
  const auto b = logits_of(plain_file.path());
  ASSERT_EQ(a.size(), 7u * kVocab);
  for (float x : a) ASSERT_TRUE(std::isfinite(x));
  EXPECT_EQ(a, b);
}

// ---- f16 / bf16 conversions (core/dtype.h) ------------------------------------------------

// The f16 nearest to `x` (not NaN), ties to the even pattern, found by bisection over the
// ordered positive halves. Beyond 65504 the next step would be 65536, so x >= 65520 is Inf.
uint16_t f16_ref(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (std::isinf(a)) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7bff;  // invariant: value(lo) <= a; find the largest such lo
  if (half_ref(hi) <= a) {
    lo = hi;
  } else {
    while (hi - lo > 1) {
      const auto mid = static_cast<uint16_t>((lo + hi) / 2);
      (half_ref(mid) <= a ? lo : hi) = mid;
    }
  }
  const uint16_t up = lo + 1;
  const double up_value = up == 0x7c00 ? 65536.0 : half_ref(up);
  const double below = a - half_ref(lo), above = up_value - a;
  const uint16_t pick = below < above ? lo : above < below ? up : (lo % 2 == 0 ? lo : up);
  return sign | pick;
}

// The bf16 nearest to `x` (not NaN), ties to even; overflow past the largest bf16 gives Inf.
uint16_t bf16_ref(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const auto lo = static_cast<uint16_t>(bits >> 16);  // same sign, magnitude truncated
  if ((bits & 0xffff) == 0) return lo;
  const auto up = static_cast<uint16_t>(lo + 1);
  const double a = std::fabs(static_cast<double>(x));
  const double lo_v = std::fabs(static_cast<double>(std::bit_cast<float>(uint32_t{lo} << 16)));
  const double up_v =
      (up & 0x7fff) == 0x7f80
          ? std::ldexp(1.0, 128)
          : std::fabs(static_cast<double>(std::bit_cast<float>(uint32_t{up} << 16)));
  const double below = a - lo_v, above = up_v - a;
  return below < above ? lo : above < below ? up : (lo % 2 == 0 ? lo : up);
}

TEST(DequantHalf, F16ToF32IsExactForAllHalves) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto hh = static_cast<uint16_t>(h);
    const float got = f16_to_f32(hh);
    const double want = half_ref(hh);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
      // Sign and payload are kept (shifted into the f32's top mantissa bits).
      ASSERT_EQ(std::signbit(got), (h & 0x8000) != 0) << std::hex << h;
      ASSERT_EQ((std::bit_cast<uint32_t>(got) >> 13) & 0x3ff, h & 0x3ff) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), want) << std::hex << h;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << h;  // -0 stays -0
    }
  }
}

TEST(DequantHalf, F32ToF16RoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto hh = static_cast<uint16_t>(h);
    const uint16_t back = f32_to_f16(f16_to_f32(hh));
    if (std::isnan(half_ref(hh))) {
      ASSERT_TRUE(std::isnan(half_ref(back))) << std::hex << h;
      ASSERT_EQ(back & 0x8000, h & 0x8000) << std::hex << h;
    } else {
      ASSERT_EQ(back, hh) << std::hex << h;
    }
  }
}

TEST(DequantHalf, F32ToF16RoundsTiesToEvenAndNeighboursToNearest) {
  for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
    for (uint32_t h = 0; h < 0x7bff + 1; ++h) {
      const auto lo = static_cast<uint16_t>(h);
      const auto up = static_cast<uint16_t>(h + 1);
      const double up_v = up == 0x7c00 ? 65536.0 : half_ref(up);
      const double mid = (half_ref(lo) + up_v) / 2;  // 12 significant bits: exact in f32
      const float m = exact_f32(sign ? -mid : mid);
      const uint16_t even = (lo % 2 == 0) ? lo : up;
      ASSERT_EQ(f32_to_f16(m), sign | even) << "tie above " << std::hex << h;
      // One f32 ulp either side of the tie decides it.
      const float toward_lo = std::nextafter(m, 0.0f);
      const float toward_up = std::nextafter(m, sign ? -INFINITY : INFINITY);
      ASSERT_EQ(f32_to_f16(toward_lo), sign | lo) << "below tie above " << std::hex << h;
      ASSERT_EQ(f32_to_f16(toward_up), sign | up) << "above tie above " << std::hex << h;
    }
  }
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);  // largest f32 below the overflow threshold
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(1e30f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_f16(1e-30f), 0x0000);
  EXPECT_EQ(f32_to_f16(-1e-30f), 0x8000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

TEST(DequantHalf, F32ToF16MatchesTheNearestHalfForRandomFloats) {
  std::mt19937_64 rng(test::test_seed());
  int checked = 0;
  for (int i = 0; i < 300000; ++i) {
    uint32_t bits;
    if (i % 3 == 0) {
      bits = static_cast<uint32_t>(rng());  // anything, mostly far outside the half range
    } else {
      // Exponents around the half range: subnormal halves (2^-24) to overflow (2^16).
      const uint32_t exp = 127 - 27 + static_cast<uint32_t>(rng() % 45);
      bits = static_cast<uint32_t>(rng() & 0x807fffff) | (exp << 23);
    }
    const float x = std::bit_cast<float>(bits);
    if (std::isnan(x)) {
      ASSERT_TRUE(std::isnan(half_ref(f32_to_f16(x)))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(f32_to_f16(x), f16_ref(x)) << std::hex << bits << " = " << x;
    ++checked;
  }
  EXPECT_GT(checked, 250000);
}

TEST(DequantBf16, RoundsToNearestEvenAndKeepsNaN) {
  std::mt19937_64 rng(test::test_seed());
  for (int i = 0; i < 300000; ++i) {
    uint32_t bits = static_cast<uint32_t>(rng());
    if (i % 4 == 0) bits = (bits & 0xffff0000u) | 0x8000u;  // exact ties
    if (i % 4 == 1) bits = (bits & 0xffff0000u) | (0x8000u + (rng() & 1 ? 1u : -1u));
    const float x = std::bit_cast<float>(bits);
    const uint16_t got = f32_to_bf16(x);
    if (std::isnan(x)) {
      // Truncating 0x7f800001 would give Inf; a NaN must stay a NaN of the same sign.
      ASSERT_TRUE(std::isnan(bf16_to_f32(got))) << std::hex << bits;
      ASSERT_EQ(got & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
    } else {
      ASSERT_EQ(got, bf16_ref(x)) << std::hex << bits << " = " << x;
    }
  }
  for (uint32_t bits : {0x7f800001u, 0xff800001u, 0x7fc00000u, 0x7fffffffu, 0x7f80ffffu}) {
    const uint16_t got = f32_to_bf16(std::bit_cast<float>(bits));
    EXPECT_TRUE(std::isnan(bf16_to_f32(got))) << std::hex << bits;
    EXPECT_EQ(got & 0x8000, (bits >> 16) & 0x8000) << std::hex << bits;
  }
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to Inf
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, 0x3f80 even
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, 0x3f82 even
}

TEST(DequantBf16, EveryBf16RoundTrips) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const auto bb = static_cast<uint16_t>(b);
    const float f = bf16_to_f32(bb);
    ASSERT_EQ(std::bit_cast<uint32_t>(f), b << 16);
    const uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(back))) << std::hex << b;
    } else {
      ASSERT_EQ(back, bb) << std::hex << b;
    }
  }
}

}  // namespace
}  // namespace lserve
