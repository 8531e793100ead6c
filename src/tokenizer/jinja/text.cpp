#include "tokenizer/jinja/text.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/error.h"

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

bool is_ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; }
char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

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

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_upper(c);
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}

std::string capitalize(std::string_view s) {
  std::string out = lower(s);
  if (!out.empty()) out[0] = to_upper(out[0]);
  return out;
}

std::string title(std::string_view s) {
  // Non-ASCII bytes count as letters (most are, in text), left as they are.
  std::string out(s);
  bool prev_cased = false;
  for (char& c : out) {
    const bool non_ascii = (static_cast<unsigned char>(c) & 0x80) != 0;
    if (is_ascii_alpha(c)) {
      c = prev_cased ? to_lower(c) : to_upper(c);
      prev_cased = true;
    } else {
      prev_cased = non_ascii;
    }
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
