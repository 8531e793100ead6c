// GPT-2's reversible byte <-> printable-character mapping used by byte-level BPE vocabularies: the
// vocabulary stores every byte as a visible Unicode character so that tokens are printable text.
#pragma once

#include <string>
#include <string_view>

namespace lserve::byte_level {

// UTF-8 text of the character that stands for byte `b` in token strings (e.g. ' ' -> "Ġ").
std::string_view encode_byte(unsigned char b);

// Maps raw bytes to the token-string alphabet.
std::string encode(std::string_view bytes);

// Inverse of encode(). Characters outside the 256-character alphabet (which a byte-level vocabulary
// should not contain) are kept as their own UTF-8 bytes rather than rejected, so any token decodes.
std::string decode(std::string_view token_text);

}  // namespace lserve::byte_level
