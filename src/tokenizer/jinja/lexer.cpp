#include "tokenizer/jinja/lexer.h"

#include <cctype>

#include "core/error.h"
#include "tokenizer/jinja/text.h"
#include "tokenizer/utf8.h"

namespace lserve::jinja {
namespace {

bool is_name_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Token> run() {
    bool first = true;
    bool in_raw = false;
    while (true) {
      size_t sign_at = 0;
      const size_t tag = in_raw ? find_endraw(pos_, &sign_at) : find_tag(pos_);
      std::string_view text(src_.data() + pos_, (tag == npos ? src_.size() : tag) - pos_);
      // What the previous tag's end consumed after it: all whitespace for `-`, else one newline
      // (trim_blocks, block and comment tags only).
      bool line_starting = first;
      if (prev_minus_) {
        const std::string_view rest = text::strip(text, {}, true, false);
        line_starting = rest.size() < text.size() && text[text.size() - rest.size() - 1] == '\n';
        text = rest;
      } else if (prev_trim_ && !text.empty() && text[0] == '\n') {
        text.remove_prefix(1);
        line_starting = true;
      }
      first = false;
      if (tag == npos) {
        emit_text(text);
        break;
      }
      const char kind = in_raw ? '%' : src_[tag + 1];
      const char sign = in_raw ? src_[sign_at] : src_[tag + 2];
      if (sign == '-') {
        text = text::strip(text, {}, false, true);
      } else if (kind != '{' && sign != '+') {
        // lstrip_blocks: a block or comment tag alone on its line takes the indentation with it.
        const size_t l = text.rfind('\n') + 1;  // npos + 1 == 0
        if ((l > 0 || line_starting) && l < text.size() &&
            text::strip(text.substr(l), {}, true, false).empty()) {
          text = text.substr(0, l);
        }
      }
      emit_text(text);
      const int tag_line = line_at(tag);
      if (in_raw) {
        in_raw = false;
        pos_ = src_.find("%}", sign_at);
        set_block_end(pos_ > 0 && src_[pos_ - 1] == '-', pos_ > 0 && src_[pos_ - 1] == '+');
        pos_ += 2;
        continue;
      }
      pos_ = tag + 2 + (sign == '-' || sign == '+' ? 1 : 0);
      if (kind == '#') {
        const size_t end = src_.find("#}", pos_);
        if (end == npos) fail("line {}: unterminated comment", tag_line);
        set_block_end(end > pos_ && src_[end - 1] == '-', end > pos_ && src_[end - 1] == '+');
        pos_ = end + 2;
        continue;
      }
      if (kind == '%' && starts_raw()) {
        in_raw = true;
        continue;
      }
      tokens_.push_back(
          {kind == '{' ? TokenType::kVarBegin : TokenType::kBlockBegin, "", tag_line});
      lex_tag(kind == '{', tag_line);
    }
    tokens_.push_back({TokenType::kEnd, "", line_at(src_.size())});
    return std::move(tokens_);
  }

 private:
  static constexpr size_t npos = std::string::npos;

  size_t find_tag(size_t from) const {
    for (size_t at = src_.find('{', from); at != npos; at = src_.find('{', at + 1)) {
      if (at + 1 < src_.size() &&
          (src_[at + 1] == '{' || src_[at + 1] == '%' || src_[at + 1] == '#')) {
        return at;
      }
    }
    return npos;
  }

  // `{% endraw %}` with optional modifiers; *sign_at: where its left modifier would be.
  size_t find_endraw(size_t from, size_t* sign_at) {
    for (size_t at = src_.find("{%", from); at != npos; at = src_.find("{%", at + 2)) {
      size_t p = at + 2;
      *sign_at = p;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
      while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (src_.compare(p, 6, "endraw") != 0) continue;
      p += 6;
      while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) ++p;
      if (src_.compare(p, 2, "%}") == 0) return at;
    }
    fail("line {}: {{% raw %}} without {{% endraw %}}", line_at(from));
  }

  // At `raw %}` (after `{%`): consumes it. trim_blocks does not apply after it, as in jinja2.
  bool starts_raw() {
    size_t p = pos_;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    if (src_.compare(p, 3, "raw") != 0 || (p + 3 < src_.size() && is_name_char(src_[p + 3]))) {
      return false;
    }
    p += 3;
    while (p < src_.size() && std::isspace(static_cast<unsigned char>(src_[p]))) ++p;
    const bool minus = p < src_.size() && src_[p] == '-';
    if (minus) ++p;
    if (src_.compare(p, 2, "%}") != 0) return false;
    pos_ = p + 2;
    prev_minus_ = minus;
    prev_trim_ = false;
    return true;
  }

  void set_block_end(bool minus, bool plus) {
    prev_minus_ = minus;
    prev_trim_ = !minus && !plus;
  }

  void emit_text(std::string_view text) {
    if (!text.empty()) tokens_.push_back({TokenType::kText, std::string(text), line_});
  }

  int line_at(size_t p) {
    for (; line_pos_ < p && line_pos_ < src_.size(); ++line_pos_) {
      if (src_[line_pos_] == '\n') ++line_;
    }
    return line_;
  }

  void lex_tag(bool is_var, int tag_line) {
    int depth = 0;  // open brackets: an end marker inside them belongs to a literal
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) ++pos_;
      if (pos_ >= src_.size()) fail("line {}: unterminated tag", tag_line);
      const int line = line_at(pos_);
      const std::string_view rest(src_.data() + pos_, src_.size() - pos_);
      if (depth == 0) {
        const std::string_view end = is_var ? "}}" : "%}";
        const bool minus = rest.size() > 2 && rest[0] == '-' && rest.substr(1, 2) == end;
        const bool plus = !is_var && rest.size() > 2 && rest[0] == '+' && rest.substr(1, 2) == end;
        if (minus || plus || rest.starts_with(end)) {
          tokens_.push_back({is_var ? TokenType::kVarEnd : TokenType::kBlockEnd, "", line});
          pos_ += minus || plus ? 3 : 2;
          prev_minus_ = minus;
          prev_trim_ = !is_var && !minus && !plus;
          return;
        }
      }
      const char c = rest[0];
      if (is_name_start(c)) {
        size_t n = 1;
        while (n < rest.size() && is_name_char(rest[n])) ++n;
        tokens_.push_back({TokenType::kName, std::string(rest.substr(0, n)), line});
        pos_ += n;
      } else if (is_digit(c)) {
        lex_number(rest, line);
      } else if (c == '\'' || c == '"') {
        lex_string(rest, line);
      } else {
        static constexpr std::string_view kTwo[] = {"==", "!=", ">=", "<=", "//", "**"};
        std::string op(1, c);
        for (std::string_view two : kTwo) {
          if (rest.starts_with(two)) op = two;
        }
        if (op.size() == 1 && std::string_view("+-*/%~<>=()[]{}.,:|").find(c) == npos) {
          fail("line {}: unexpected character '{}'", line, c);
        }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        tokens_.push_back({TokenType::kOperator, op, line});
        pos_ += op.size();
      }
    }
  }

  void lex_number(std::string_view rest, int line) {
    size_t n = 0;
    std::string digits;
    auto take_digits = [&] {
      while (n < rest.size() && (is_digit(rest[n]) || (rest[n] == '_' && n + 1 < rest.size() &&
                                                       is_digit(rest[n + 1])))) {
        if (rest[n] != '_') digits += rest[n];
        ++n;
      }
    };
    take_digits();
    bool is_float = false;
    if (n + 1 < rest.size() && rest[n] == '.' && is_digit(rest[n + 1])) {
      is_float = true;
      digits += rest[n++];
      take_digits();
    }
    if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
      size_t m = n + 1;
      if (m < rest.size() && (rest[m] == '+' || rest[m] == '-')) ++m;
      if (m < rest.size() && is_digit(rest[m])) {
        is_float = true;
        digits += rest.substr(n, m - n);
        n = m;
        take_digits();
      }
    }
    tokens_.push_back({is_float ? TokenType::kFloat : TokenType::kInt, digits, line});
    pos_ += n;
  }

  // Python's escapes, as jinja2 resolves them ("unicode-escape").
  void lex_string(std::string_view rest, int line) {
    const char quote = rest[0];
    std::string value;
    size_t i = 1;
    for (;; ++i) {
      if (i >= rest.size()) fail("line {}: unterminated string literal", line);
      const char c = rest[i];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (++i >= rest.size()) fail("line {}: unterminated string literal", line);
      const char e = rest[i];
      auto hex = [&](size_t count) {
        uint32_t cp = 0;
        for (size_t k = 1; k <= count; ++k) {
          const char h = i + k < rest.size() ? rest[i + k] : '\0';
          if (!std::isxdigit(static_cast<unsigned char>(h))) {
            fail("line {}: truncated \\{} escape in a string literal", line, e);
          }
          cp = cp * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h))
                                                   ? h - '0'
                                                   : std::tolower(h) - 'a' + 10);
        }
        LSERVE_CHECK(cp <= 0x10ffff, "line {}: escape beyond U+10FFFF in a string literal", line);
        i += count;
        utf8::append(value, static_cast<char32_t>(cp));
      };
      switch (e) {
        case '\n':
          break;
        case '\\':
        case '\'':
        case '"':
          value += e;
          break;
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case 'a':
          value += '\a';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case 'x':
          hex(2);
          break;
        case 'u':
          hex(4);
          break;
        case 'U':
          hex(8);
          break;
        default:
          if (e >= '0' && e <= '7') {
            uint32_t cp = 0;
            size_t k = 0;
            for (; k < 3 && i + k < rest.size() && rest[i + k] >= '0' && rest[i + k] <= '7'; ++k) {
              cp = cp * 8 + static_cast<uint32_t>(rest[i + k] - '0');
            }
            i += k - 1;
            utf8::append(value, static_cast<char32_t>(cp));
          } else {
            value += '\\';
            value += e;
          }
      }
    }
    tokens_.push_back({TokenType::kString, std::move(value), line});
    pos_ += i + 1;
  }

  std::string src_;
  size_t pos_ = 0;
  size_t line_pos_ = 0;
  int line_ = 1;
  bool prev_minus_ = false;
  bool prev_trim_ = false;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(std::string_view source) {
  // jinja2 reads "\r\n" and "\r" as "\n" everywhere, and drops one final newline.
  std::string src;
  src.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      src += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      src += source[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  return Lexer(std::move(src)).run();
}

}  // namespace lserve::jinja
