#include "tokenizer/jinja/text.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace lserve::jinja::text {
namespace {

// Length of the UTF-8 sequence at `at` and its code point; an invalid byte is one "code point"
// of its own value with the high bit set, so that it is never taken for whitespace or ASCII.
size_t decode(std::string_view s, size_t at, uint32_t* cp) {
  const auto b = static_cast<unsigned char>(s[at]);
  size_t n = 0;
  uint32_t c = 0;
  if (b < 0x80) {
    *cp = b;
    return 1;
  } else if ((b & 0xe0) == 0xc0) {
    n = 2, c = b & 0x1f;
  } else if ((b & 0xf0) == 0xe0) {
    n = 3, c = b & 0x0f;
  } else if ((b & 0xf8) == 0xf0) {
    n = 4, c = b & 0x07;
  } else {
    *cp = 0x80000000u | b;
    return 1;
  }
  if (at + n > s.size()) {
    *cp = 0x80000000u | b;
    return 1;
  }
  for (size_t i = 1; i < n; ++i) {
    const auto cb = static_cast<unsigned char>(s[at + i]);
    if ((cb & 0xc0) != 0x80) {
      *cp = 0x80000000u | b;
      return 1;
    }
    c = (c << 6) | (cb & 0x3f);
  }
  *cp = c;
  return n;
}

bool is_space_cp(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
         c == 0x205f || c == 0x3000;
}

// Simple (one to one) case mappings of the scripts chat text mostly uses: ASCII, Latin-1,
// Latin Extended-A, Greek, Cyrillic, Armenian and fullwidth Latin. Other code points keep
// their case.
uint32_t upper_cp(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xe0 && c <= 0xfe && c != 0xf7)) return c - 0x20;
  if (c == 0xff) return 0x178;
  if (c == 0xb5) return 0x39c;
  if ((c >= 0x100 && c <= 0x12f) || (c >= 0x132 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) {
    return c & ~1u;
  }
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c : c - 1;
  if (c == 0x131) return 'I';
  if (c == 0x3c2) return 0x3a3;
  if (c >= 0x3b1 && c <= 0x3c9) return c - 0x20;
  if (c == 0x3ac) return 0x386;
  if (c >= 0x3ad && c <= 0x3af) return c - 0x25;
  if (c == 0x3cc) return 0x38c;
  if (c == 0x3cd || c == 0x3ce) return c - 0x3f;
  if (c >= 0x430 && c <= 0x44f) return c - 0x20;
  if (c >= 0x450 && c <= 0x45f) return c - 0x50;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)) return c & ~1u;
  if (c >= 0x561 && c <= 0x586) return c - 0x30;
  if (c >= 0xff41 && c <= 0xff5a) return c - 0x20;
  return c;
}

uint32_t lower_cp(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xc0 && c <= 0xde && c != 0xd7) return c + 0x20;
  if (c == 0x178) return 0xff;
  if ((c >= 0x100 && c <= 0x12f) || (c >= 0x132 && c <= 0x137) || (c >= 0x14a && c <= 0x177)) {
    return c | 1u;
  }
  if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3a9 && c != 0x3a2) return c + 0x20;
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 0x25;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 0x3f;
  if (c >= 0x410 && c <= 0x42f) return c + 0x20;
  if (c >= 0x400 && c <= 0x40f) return c + 0x50;
  if ((c >= 0x460 && c <= 0x481) || (c >= 0x48a && c <= 0x4bf)) return c | 1u;
  if (c >= 0x531 && c <= 0x556) return c + 0x30;
  if (c >= 0xff21 && c <= 0xff3a) return c + 0x20;
  return c;
}

bool is_cased(uint32_t c) { return upper_cp(c) != c || lower_cp(c) != c || c == 0xdf; }

// `raw` is the encoding of `cp`; invalid bytes and unmapped code points are copied as they are.
void append_mapped(std::string_view raw, uint32_t cp, uint32_t (*map)(uint32_t), std::string& out) {
  const uint32_t m = (cp & 0x80000000u) ? cp : map(cp);
  if (m == cp) {
    out.append(raw);
  } else {
    utf8::append(out, static_cast<char32_t>(m));
  }
}

std::string map_code_points(std::string_view s, uint32_t (*map)(uint32_t)) {
  std::string out;
  out.reserve(s.size());
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode(s, i, &cp);
    append_mapped(s.substr(i, n), cp, map, out);
    i += n;
  }
  return out;
}

// Python's isprintable() for the code points chat text meets: controls, format characters and
// separators other than ' ' are escaped by repr().
bool is_printable_cp(uint32_t c) {
  if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return false;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f)) return false;
  if ((c >= 0x205f && c <= 0x2064) || c == 0x3000 || c == 0xfeff) return false;
  return (c & 0x80000000u) == 0;
}

}  // namespace

std::vector<size_t> code_points(std::string_view s) {
  std::vector<size_t> at;
  at.reserve(s.size() + 1);
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size(); i += decode(s, i, &cp)) at.push_back(i);
  at.push_back(s.size());
  return at;
}

size_t length(std::string_view s) {
  size_t n = 0;
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size(); i += decode(s, i, &cp)) ++n;
  return n;
}

bool is_space_at(std::string_view s, size_t at, size_t* len) {
  uint32_t cp = 0;
  *len = decode(s, at, &cp);
  return is_space_cp(cp);
}

std::string_view strip(std::string_view s, std::string_view chars, bool left, bool right) {
  if (!chars.empty()) {
    // Python strips code points of `chars`; byte-wise is the same for ASCII sets, the usual case.
    if (left) {
      const size_t b = s.find_first_not_of(chars);
      s = b == std::string_view::npos ? std::string_view{} : s.substr(b);
    }
    if (right) {
      const size_t e = s.find_last_not_of(chars);
      s = e == std::string_view::npos ? std::string_view{} : s.substr(0, e + 1);
    }
    return s;
  }
  const std::vector<size_t> at = code_points(s);
  size_t b = 0, e = at.size() - 1;  // code point indices [b, e)
  size_t len = 0;
  if (left) {
    while (b < e && is_space_at(s, at[b], &len)) ++b;
  }
  if (right) {
    while (e > b && is_space_at(s, at[e - 1], &len)) --e;
  }
  return s.substr(at[b], at[e] - at[b]);
}

std::string upper(std::string_view s) { return map_code_points(s, upper_cp); }
std::string lower(std::string_view s) { return map_code_points(s, lower_cp); }

std::string capitalize(std::string_view s) {
  std::string out;
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode(s, i, &cp);
    append_mapped(s.substr(i, n), cp, i == 0 ? upper_cp : lower_cp, out);
    i += n;
  }
  return out;
}

std::string title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode(s, i, &cp);
    const bool cased = is_cased(cp);
    append_mapped(s.substr(i, n), cp, cased && !prev_cased ? upper_cp : lower_cp, out);
    prev_cased = cased;
    i += n;
  }
  return out;
}

std::string title_words(std::string_view s) {
  std::string out;
  bool start = true;
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode(s, i, &cp);
    append_mapped(s.substr(i, n), cp, start ? upper_cp : lower_cp, out);
    start = is_space_cp(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
    i += n;
  }
  return out;
}

std::vector<std::string> split(std::string_view s, std::string_view sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (!sep.empty()) {
    size_t from = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t at = s.find(sep, from);
      if (at == std::string_view::npos) break;
      parts.emplace_back(s.substr(from, at - from));
      from = at + sep.size();
    }
    parts.emplace_back(s.substr(from));
    return parts;
  }
  size_t i = 0, len = 0;
  while (true) {
    while (i < s.size() && is_space_at(s, i, &len)) i += len;
    if (i >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) >= maxsplit) {
      parts.emplace_back(strip(s.substr(i), {}, false, true));
      break;
    }
    const size_t start = i;
    while (i < s.size() && !is_space_at(s, i, &len)) i += len;
    parts.emplace_back(s.substr(start, i - start));
  }
  return parts;
}

std::string replace(std::string_view s, std::string_view from, std::string_view to, int64_t count,
                    size_t max_bytes) {
  std::string out;
  auto append = [&](std::string_view piece) {
    LSERVE_CHECK(out.size() + piece.size() <= max_bytes, "replace() result exceeds {} bytes",
                 max_bytes);
    out.append(piece);
  };
  int64_t done = 0;
  if (from.empty()) {
    // Python inserts `to` before every code point and at the end.
    const std::vector<size_t> at = code_points(s);
    for (size_t k = 0; k + 1 < at.size(); ++k) {
      if (count < 0 || done < count) append(to), ++done;
      append(s.substr(at[k], at[k + 1] - at[k]));
    }
    if (count < 0 || done < count) append(to);
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(from, pos);
    if (at == std::string_view::npos) break;
    append(s.substr(pos, at - pos));
    append(to);
    pos = at + from.size();
    ++done;
  }
  append(s.substr(pos));
  return out;
}

std::string repr_string(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  uint32_t cp = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t n = decode(s, i, &cp);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (is_printable_cp(cp)) {
      out.append(s.substr(i, n));
    } else if (cp & 0x80000000u) {
      out += fmt::format("\\x{:02x}", cp & 0xff);
    } else if (cp < 0x100) {
      out += fmt::format("\\x{:02x}", cp);
    } else {
      out += fmt::format("\\u{:04x}", cp);
    }
    i += n;
  }
  out += quote;
  return out;
}

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string repr_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  // Shortest digits that read back as d, as Python's repr; then Python's layout of them.
  const auto res = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  const size_t e = sci.find('e');
  std::string digits;
  bool negative = false;
  for (char c : sci.substr(0, e)) {
    if (c == '-') {
      negative = true;
    } else if (c != '.') {
      digits += c;
    }
  }
  const int exp = std::atoi(std::string(sci.substr(e + 1)).c_str());
  const int decpt = exp + 1;
  std::string out = negative ? "-" : "";
  const int n = static_cast<int>(digits.size());
  if (decpt <= -4 || decpt > 16) {
    out += digits[0];
    if (n > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
  } else if (decpt <= 0) {
    out += "0." + std::string(static_cast<size_t>(-decpt), '0') + digits;
  } else if (decpt >= n) {
    out += digits + std::string(static_cast<size_t>(decpt - n), '0') + ".0";
  } else {
    out += digits.substr(0, static_cast<size_t>(decpt)) + "." +
           digits.substr(static_cast<size_t>(decpt));
  }
  return out;
}

}  // namespace lserve::jinja::text
