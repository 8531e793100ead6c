// Small UTF-8 helpers shared by the tokenizer, the detokenizer and the chat templates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lserve::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Appends the UTF-8 encoding of code point `cp` (must be <= 0x10FFFF).
void append(std::string& out, char32_t cp);

// Length of the well-formed UTF-8 sequence starting at s[0]: 1..4, or 0 when s[0] does not start
// a well-formed character (stray continuation byte, overlong form, surrogate, > U+10FFFF, or a
// truncated sequence). `s` must be non-empty.
size_t valid_sequence_length(std::string_view s);

// Number of bytes at the start of `s` that could still become a well-formed character once more
// bytes arrive (a truncated but so far valid sequence): 0 when s[0] is complete or invalid.
size_t incomplete_prefix_length(std::string_view s);

// Length of the maximal subpart of an ill-formed sequence at the start of `s` (s[0] must not start
// a well-formed character): the bytes that one U+FFFD replaces, as Unicode recommends. At least 1.
size_t invalid_prefix_length(std::string_view s);

// Decodes the character at the start of `s`; returns its length, or 0 (and cp unset) if invalid.
size_t decode(std::string_view s, char32_t& cp);

// Copies `s`, replacing each maximal ill-formed subpart by one U+FFFD.
std::string sanitize(std::string_view s);

}  // namespace lserve::utf8
