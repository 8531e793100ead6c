// Bounds-checked little-endian cursor over untrusted bytes (model files). Every read names the
// field it is reading so a truncated or corrupted file gets an error that says where it broke.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/error.h"

namespace lserve {

class ByteReader {
 public:
  ByteReader(std::span<const uint8_t> bytes, std::string source)
      : bytes_(bytes), source_(std::move(source)) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }
  const std::string& source() const { return source_; }

  template <typename T>
  T read(std::string_view field) {
    static_assert(std::is_trivially_copyable_v<T>);
    require(sizeof(T), field);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  // A length-prefixed (u64) string, at most `max_len` bytes.
  std::string read_string(std::string_view field, uint64_t max_len = 1u << 24) {
    const uint64_t n = read<uint64_t>(field);
    LSERVE_CHECK(n <= max_len, "{}: {} has length {} at offset {}, more than the limit {}", source_,
                 field, n, pos_ - 8, max_len);
    require(n, field);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  void skip(uint64_t n, std::string_view field) {
    require(n, field);
    pos_ += n;
  }

  void align_to(uint64_t alignment, std::string_view field) {
    const uint64_t pad = (alignment - pos_ % alignment) % alignment;
    skip(pad, field);
  }

  void require(uint64_t n, std::string_view field) const {
    LSERVE_CHECK(n <= remaining(), "{}: truncated while reading {} at offset {} (need {} bytes, {} left)",
                 source_, field, pos_, n, remaining());
  }

 private:
  std::span<const uint8_t> bytes_;
  std::string source_;
  size_t pos_ = 0;
};

}  // namespace lserve
