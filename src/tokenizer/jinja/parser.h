// Parses lexed template tokens into statements (jinja2's grammar for the subset lserve runs).
#pragma once

#include <string_view>

#include "tokenizer/jinja/ast.h"

namespace lserve::jinja {

// Error naming the line for a syntax error, an unsupported statement ({% include %},
// {% extends %}, ...), or nesting deeper than the parser allows.
Body parse(std::string_view source);

}  // namespace lserve::jinja
