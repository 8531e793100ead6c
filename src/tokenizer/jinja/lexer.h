// Splits a template into text and the tokens inside {{ }} and {% %}, applying whitespace control
// as Hugging Face configures jinja2 for chat templates: trim_blocks and lstrip_blocks on, `-` and
// `+` modifiers, comments dropped, newlines normalised and one trailing newline removed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lserve::jinja {

enum class TokenType {
  kText,        // template text, whitespace control already applied
  kVarBegin,    // {{
  kVarEnd,      // }}
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kName,        // identifiers and keywords
  kString,      // value: the literal with escapes resolved
  kInt,         // value: the digits, '_' removed
  kFloat,       // value: the literal, '_' removed
  kOperator,    // value: the operator, e.g. "==", "(", "."
  kEnd,         // end of the template
};

struct Token {
  TokenType type;
  std::string value;
  int line;
};

// Error (with the line) for an unterminated tag, comment or string, or a character that
// starts no token.
std::vector<Token> lex(std::string_view source);

}  // namespace lserve::jinja
