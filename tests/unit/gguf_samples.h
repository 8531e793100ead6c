// Shared by the GGUF reader tests (test_gguf*.cpp): random tensors of known geometry, a sample
// file with metadata of every value type, and the checks of an opened file against its spec.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gguf_writer.h"
#include "io/gguf.h"
#include "test_util.h"

namespace lserve::test {

// Bytes per element block of the ggml types used here, from the GGUF specification (kept apart
// from src/io/ggml_type.cpp so a wrong table there shows up as a size mismatch here).
struct BlockGeometry {
  uint32_t type;
  uint64_t block_size;
  uint64_t block_bytes;
};
inline constexpr BlockGeometry kGeometry[] = {
    {0, 1, 4},   {1, 1, 2},   {2, 32, 18},    {3, 32, 20},    {6, 32, 22},
    {7, 32, 24}, {8, 32, 34}, {12, 256, 144}, {14, 256, 210}, {30, 1, 2}};

inline uint64_t tensor_bytes(uint32_t type, const std::vector<uint64_t>& dims) {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  for (const auto& g : kGeometry) {
    if (g.type == type) return n / g.block_size * g.block_bytes;
  }
  ADD_FAILURE() << "no geometry for type " << type;
  return 0;
}

inline std::vector<uint8_t> random_bytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> b(n);
  for (auto& x : b) x = static_cast<uint8_t>(rng());
  return b;
}

inline GgufTensorSpec random_tensor(std::mt19937_64& rng, std::string name, uint32_t type,
                                    std::vector<uint64_t> dims) {
  GgufTensorSpec t;
  t.name = std::move(name);
  t.type = type;
  t.data = random_bytes(rng, tensor_bytes(type, dims));
  t.dims = std::move(dims);
  return t;
}

inline std::string open_error(const std::vector<uint8_t>& bytes) {
  return test::open_error<GgufFile>("bad.gguf", bytes);
}

inline std::string open_error(const GgufSpec& spec) {
  return open_error(test::build_gguf(spec).bytes);
}

// A file with metadata of every value type and tensors of several types and odd shapes; the
// random values are what the round-trip checks compare against.
struct Sample {
  GgufSpec spec;
  uint8_t u8;
  int8_t i8;
  uint16_t u16;
  int16_t i16;
  uint32_t u32;
  int32_t i32;
  uint64_t u64;
  int64_t i64;
  float f32;
  double f64;
  std::string text;
  std::vector<int32_t> ints;
  std::vector<std::string> strings;
  std::vector<float> floats;
};

inline Sample make_sample(std::mt19937_64& rng, uint32_t version) {
  Sample s;
  s.spec.version = version;
  s.u8 = static_cast<uint8_t>(rng());
  s.i8 = static_cast<int8_t>(rng());
  s.u16 = static_cast<uint16_t>(rng());
  s.i16 = static_cast<int16_t>(rng());
  s.u32 = static_cast<uint32_t>(rng());
  s.i32 = static_cast<int32_t>(rng());
  s.u64 = rng() >> 2;  // below INT64_MAX so get_int accepts it
  s.i64 = static_cast<int64_t>(rng());
  s.f32 = std::uniform_real_distribution<float>(-1e6f, 1e6f)(rng);
  s.f64 = std::uniform_real_distribution<double>(-1e300, 1e300)(rng);
  s.text = "llama \xe2\x80\x94 " + std::to_string(rng() % 100000);  // UTF-8 survives as bytes
  for (int i = 0; i < 1 + static_cast<int>(rng() % 9); ++i)
    s.ints.push_back(static_cast<int32_t>(rng()));
  for (int i = 0; i < 1 + static_cast<int>(rng() % 7); ++i) {
    s.strings.push_back(std::string(rng() % 6, static_cast<char>('a' + rng() % 26)));
  }
  for (int i = 0; i < 1 + static_cast<int>(rng() % 5); ++i) {
    s.floats.push_back(std::uniform_real_distribution<float>(-3, 3)(rng));
  }

  std::vector<GgufVal> ints, strings, floats;
  for (int32_t v : s.ints) ints.push_back(gguf_i32(v));
  for (const auto& v : s.strings) strings.push_back(gguf_str(v));
  for (float v : s.floats) floats.push_back(gguf_f32(v));
  s.spec.kvs = {
      {"general.architecture", gguf_str("llama")},
      {"t.u8", gguf_u8(s.u8)},
      {"t.i8", gguf_i8(s.i8)},
      {"t.u16", gguf_u16(s.u16)},
      {"t.i16", gguf_i16(s.i16)},
      {"t.u32", gguf_u32(s.u32)},
      {"t.i32", gguf_i32(s.i32)},
      {"t.u64", gguf_u64(s.u64)},
      {"t.i64", gguf_i64(s.i64)},
      {"t.f32", gguf_f32(s.f32)},
      {"t.f64", gguf_f64(s.f64)},
      {"t.true", gguf_bool(true)},
      {"t.false", gguf_bool(false)},
      {"t.string", gguf_str(s.text)},
      {"t.empty_string", gguf_str("")},
      {"t.ints", gguf_array(kGgufI32, ints)},
      {"t.strings", gguf_array(kGgufString, strings)},
      {"t.floats", gguf_array(kGgufF32, floats)},
      {"t.empty_array", gguf_array(kGgufU8, {})},
  };
  s.spec.tensors = {
      random_tensor(rng, "token_embd.weight", 0, {7, 3}),
      random_tensor(rng, "blk.0.attn_norm.weight", 1, {5}),
      random_tensor(rng, "blk.0.attn_q.weight", 2, {96, 3}),
      random_tensor(rng, "blk.0.ffn_up.weight", 8, {32, 1, 5}),
      random_tensor(rng, "blk.0.ffn_down.weight", 12, {256, 3}),
      random_tensor(rng, "output.weight", 14, {512, 1, 1, 1}),
      random_tensor(rng, "rope_freqs.weight", 30, {3, 1, 1, 2}),
  };
  return s;
}

// Checks the tensors of an opened file against the spec it was written from.
inline void expect_tensors(const GgufFile& g, const GgufSpec& spec, const GgufImage& img) {
  ASSERT_EQ(g.tensors().size(), spec.tensors.size());
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const auto& want = spec.tensors[i];
    const GgufTensorInfo& t = g.tensors()[i];  // file order is kept
    SCOPED_TRACE(want.name);
    EXPECT_EQ(t.name, want.name);
    EXPECT_EQ(t.dims, want.dims);
    EXPECT_EQ(static_cast<uint32_t>(t.type), want.type);
    EXPECT_EQ(t.offset, img.offsets[i]);
    EXPECT_EQ(t.offset % g.alignment(), 0u);
    uint64_t n = 1;
    for (uint64_t d : want.dims) n *= d;
    EXPECT_EQ(t.n_elements, n);
    EXPECT_EQ(t.n_bytes, want.data.size());
    ASSERT_NE(t.data, nullptr);
    // The mapping is page-aligned, so the pointer itself shows where in the file the data is.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % std::min<uint64_t>(g.alignment(), 4096), 0u);
    EXPECT_EQ(std::memcmp(t.data, want.data.data(), want.data.size()), 0);
    EXPECT_EQ(g.find_tensor(want.name), &t);
    EXPECT_EQ(&g.tensor(want.name), &t);
  }
}

}  // namespace lserve::test
