#include "tokenizer/utf8.h"

namespace lserve::utf8 {
namespace {

// Valid range of the second byte for each lead byte (RFC 3629 table); excluding overlongs and
// surrogates here keeps the per-byte check below uniform (later bytes are always 80..BF).
struct LeadInfo {
  uint8_t length;
  uint8_t second_lo;
  uint8_t second_hi;
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Returns how many bytes of `s` (capped at the character's length) fit the lead byte's pattern.
size_t matching_bytes(std::string_view s, const LeadInfo& info) {
  size_t n = 1;
  while (n < info.length && n < s.size()) {
    const auto b = static_cast<uint8_t>(s[n]);
    const bool ok =
        n == 1 ? (b >= info.second_lo && b <= info.second_hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++n;
  }
  return n;
}

}  // namespace

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

size_t valid_sequence_length(std::string_view s) {
  const LeadInfo info = lead_info(static_cast<uint8_t>(s[0]));
  if (info.length == 0) return 0;
  return matching_bytes(s, info) == info.length ? info.length : 0;
}

size_t incomplete_prefix_length(std::string_view s) {
  const LeadInfo info = lead_info(static_cast<uint8_t>(s[0]));
  if (info.length <= 1 || s.size() >= info.length) return 0;
  const size_t n = matching_bytes(s, info);
  return n == s.size() ? n : 0;
}

size_t invalid_prefix_length(std::string_view s) {
  const LeadInfo info = lead_info(static_cast<uint8_t>(s[0]));
  return info.length <= 1 ? 1 : matching_bytes(s, info);
}

size_t decode(std::string_view s, char32_t& cp) {
  const size_t n = valid_sequence_length(s);
  if (n == 0) return 0;
  static constexpr uint8_t kLeadMask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  char32_t v = static_cast<uint8_t>(s[0]) & kLeadMask[n];
  for (size_t i = 1; i < n; ++i) v = (v << 6) | (static_cast<uint8_t>(s[i]) & 0x3F);
  cp = v;
  return n;
}

std::string sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = valid_sequence_length(s.substr(i));
    if (n == 0) {
      out += kReplacement;
      i += invalid_prefix_length(s.substr(i));
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace lserve::utf8
