#include "tokenizer/byte_level.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace lserve::byte_level {
namespace {

// The printable Latin-1 ranges map to themselves; every other byte is shifted to U+0100 upwards, in
// byte order. Code points therefore stay below 256 + 68 = 324.
constexpr char32_t kMaxCodePoint = 324;

struct Tables {
  std::array<std::string, 256> byte_to_text;
  std::array<int16_t, kMaxCodePoint> code_point_to_byte;
};

bool maps_to_itself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

const Tables& tables() {
  static const Tables t = [] {
    Tables r;
    r.code_point_to_byte.fill(-1);
    char32_t next_shifted = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = maps_to_itself(b) ? static_cast<char32_t>(b) : next_shifted++;
      utf8::append(r.byte_to_text[b], cp);
      r.code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
    return r;
  }();
  return t;
}

}  // namespace

std::string_view encode_byte(unsigned char b) { return tables().byte_to_text[b]; }

std::string encode(std::string_view bytes) {
  const Tables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_text[static_cast<unsigned char>(c)];
  return out;
}

std::string decode(std::string_view token_text) {
  const Tables& t = tables();
  std::string out;
  out.reserve(token_text.size());
  size_t i = 0;
  while (i < token_text.size()) {
    char32_t cp = 0;
    const size_t n = utf8::decode(token_text.substr(i), cp);
    if (n == 0) {  // not UTF-8 at all: pass the byte through
      out += token_text[i++];
      continue;
    }
    if (cp < kMaxCodePoint && t.code_point_to_byte[cp] >= 0) {
      out += static_cast<char>(t.code_point_to_byte[cp]);
    } else {
      out.append(token_text.substr(i, n));
    }
    i += n;
  }
  return out;
}

}  // namespace lserve::byte_level
