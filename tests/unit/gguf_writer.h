// Test-only GGUF serialiser: builds a GGUF v2/v3 file from metadata and tensors, byte by byte as
// the specification lays it out, with knobs to write the invalid files the reader must reject.
// Independent of src/io/gguf.cpp on purpose, so the reader is checked against the format, not
// against itself. Also holds the temp-file helpers the model-file tests share.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace lserve::test {

// GGUF metadata value type ids (the specification's gguf_type).
enum GgufTypeId : uint32_t {
  kGgufU8 = 0,
  kGgufI8 = 1,
  kGgufU16 = 2,
  kGgufI16 = 3,
  kGgufU32 = 4,
  kGgufI32 = 5,
  kGgufF32 = 6,
  kGgufBool = 7,
  kGgufString = 8,
  kGgufArray = 9,
  kGgufU64 = 10,
  kGgufI64 = 11,
  kGgufF64 = 12,
};

// Little-endian byte sink (the test machines are little-endian, as is GGUF v2/v3 by default).
class Bytes {
 public:
  template <typename T>
  Bytes& put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    data_.insert(data_.end(), p, p + sizeof(T));
    return *this;
  }
  Bytes& str(std::string_view s) {
    put<uint64_t>(s.size());
    data_.insert(data_.end(), s.begin(), s.end());
    return *this;
  }
  Bytes& raw(std::span<const uint8_t> b) {
    data_.insert(data_.end(), b.begin(), b.end());
    return *this;
  }
  Bytes& zeros(size_t n) {
    data_.insert(data_.end(), n, 0);
    return *this;
  }
  const std::vector<uint8_t>& data() const { return data_; }
  size_t size() const { return data_.size(); }

 private:
  std::vector<uint8_t> data_;
};

// One metadata value as it is written: its type id and its payload bytes (for an array, the
// element type, the count and the elements).
struct GgufVal {
  uint32_t type = kGgufU8;
  std::vector<uint8_t> payload;
};

template <typename T>
GgufVal gguf_scalar(uint32_t type, T v) {
  return {type, Bytes().put<T>(v).data()};
}
inline GgufVal gguf_u8(uint8_t v) { return gguf_scalar(kGgufU8, v); }
inline GgufVal gguf_i8(int8_t v) { return gguf_scalar(kGgufI8, v); }
inline GgufVal gguf_u16(uint16_t v) { return gguf_scalar(kGgufU16, v); }
inline GgufVal gguf_i16(int16_t v) { return gguf_scalar(kGgufI16, v); }
inline GgufVal gguf_u32(uint32_t v) { return gguf_scalar(kGgufU32, v); }
inline GgufVal gguf_i32(int32_t v) { return gguf_scalar(kGgufI32, v); }
inline GgufVal gguf_u64(uint64_t v) { return gguf_scalar(kGgufU64, v); }
inline GgufVal gguf_i64(int64_t v) { return gguf_scalar(kGgufI64, v); }
inline GgufVal gguf_f32(float v) { return gguf_scalar(kGgufF32, v); }
inline GgufVal gguf_f64(double v) { return gguf_scalar(kGgufF64, v); }
inline GgufVal gguf_bool(bool v) { return gguf_scalar(kGgufBool, static_cast<uint8_t>(v)); }
inline GgufVal gguf_str(std::string_view s) { return {kGgufString, Bytes().str(s).data()}; }

// An array of `elem_type` whose elements are `items` (each must have that type); `count`
// overrides the written element count to fake a length the data does not back.
inline GgufVal gguf_array(uint32_t elem_type, const std::vector<GgufVal>& items,
                          std::optional<uint64_t> count = std::nullopt) {
  Bytes b;
  b.put<uint32_t>(elem_type).put<uint64_t>(count.value_or(items.size()));
  for (const auto& it : items) b.raw(it.payload);
  return {kGgufArray, b.data()};
}

struct GgufTensorSpec {
  std::string name;
  std::vector<uint64_t> dims;      // ggml order, innermost first
  uint32_t type = 0;               // ggml type id
  std::vector<uint8_t> data;       // the tensor's bytes as stored
  std::optional<uint64_t> offset;  // overrides the offset written into the tensor info
};

struct GgufSpec {
  uint32_t magic = 0x46554747;  // "GGUF"
  uint32_t version = 3;
  uint64_t alignment = 32;  // padding used by the writer; add general.alignment yourself
  std::vector<std::pair<std::string, GgufVal>> kvs;
  std::vector<GgufTensorSpec> tensors;
  std::optional<uint64_t> n_tensors;  // override the written counts
  std::optional<uint64_t> n_kv;
};

struct GgufImage {
  std::vector<uint8_t> bytes;
  size_t infos_end = 0;           // end of the tensor infos (start of the padding before the data)
  size_t data_start = 0;          // start of the data section
  size_t data_end = 0;            // end of the last tensor's bytes; the file is padded after it
  std::vector<uint64_t> offsets;  // each tensor's offset relative to data_start
};

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Lays the file out as llama.cpp's gguf writer does: header, key-values, tensor infos, padding to
// the alignment, then each tensor's bytes padded to the alignment, in order.
inline GgufImage build_gguf(const GgufSpec& spec) {
  GgufImage img;
  uint64_t off = 0;
  for (const auto& t : spec.tensors) {
    img.offsets.push_back(t.offset.value_or(off));
    off = align_up(off + t.data.size(), spec.alignment);
  }
  Bytes b;
  b.put<uint32_t>(spec.magic).put<uint32_t>(spec.version);
  b.put<uint64_t>(spec.n_tensors.value_or(spec.tensors.size()));
  b.put<uint64_t>(spec.n_kv.value_or(spec.kvs.size()));
  for (const auto& [key, v] : spec.kvs) b.str(key).put<uint32_t>(v.type).raw(v.payload);
  for (size_t i = 0; i < spec.tensors.size(); ++i) {
    const auto& t = spec.tensors[i];
    b.str(t.name).put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) b.put<uint64_t>(d);
    b.put<uint32_t>(t.type).put<uint64_t>(img.offsets[i]);
  }
  img.infos_end = b.size();
  b.zeros(align_up(b.size(), spec.alignment) - b.size());
  img.data_start = b.size();
  img.data_end = b.size();
  uint64_t written = 0;
  for (const auto& t : spec.tensors) {
    b.raw(t.data);
    written += t.data.size();
    img.data_end = b.size();
    const uint64_t pad = align_up(written, spec.alignment) - written;
    b.zeros(pad);
    written += pad;
  }
  img.bytes = b.data();
  return img;
}

// A file under testing::TempDir() with a name unique to this process, removed when it goes out of
// scope. ctest runs each test in its own process, so names must not collide across processes.
class TempFile {
 public:
  explicit TempFile(std::string_view stem) : path_(unique_path(stem)) {}
  TempFile(std::string_view stem, std::span<const uint8_t> bytes) : TempFile(stem) { write(bytes); }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(std::span<const uint8_t> bytes) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << "cannot write " << path_;
  }
  const std::string& path() const { return path_; }

  static std::string unique_path(std::string_view stem) {
    static int counter = 0;
    return testing::TempDir() + "lserve_" + std::to_string(::getpid()) + "_" +
           std::to_string(counter++) + "_" + std::string(stem);
  }

 private:
  std::string path_;
};

// A directory under testing::TempDir(), removed with its contents when it goes out of scope.
class TempDir {
 public:
  explicit TempDir(std::string_view stem) : path_(TempFile::unique_path(stem)) {
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }
  void write(std::string_view name, std::span<const uint8_t> bytes) const {
    std::ofstream out(file(name), std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << "cannot write " << file(name);
  }
  void write(std::string_view name, std::string_view text) const {
    write(name, std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  }

 private:
  std::string path_;
};


inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Opens `bytes` (written to a temporary file named after `stem`) with Reader, expecting an Error;
// returns its message after checking that it names the file (every reader error must say which
// file was bad). Any other exception type (bad_alloc, length_error) escapes and fails the test.
template <typename Reader>
std::string open_error(std::string_view stem, const std::vector<uint8_t>& bytes) {
  TempFile f(stem, bytes);
  try {
    Reader r(f.path());
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(contains(msg, f.path())) << "message does not name the file: " << msg;
    return msg;
  }
  ADD_FAILURE() << "a corrupt file opened without error";
  return {};
}

}  // namespace lserve::test
