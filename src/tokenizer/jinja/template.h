// A Jinja2-subset template (the language of Hugging Face chat templates), parsed once and
// rendered many times. Templates and the data they render are untrusted: every render runs
// under Limits, and every failure is an lserve::Error saying what and where.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace lserve::jinja {

// Thrown by a template's own raise_exception(message): the message is the template's words,
// without the line prefix other errors get.
class RaisedError : public Error {
 public:
  using Error::Error;
};

struct Limits {
  int max_call_depth = 64;                  // nested macro calls
  int64_t max_loop_iterations = 1'000'000;  // over all loops of one render; also list sizes
  size_t max_output_bytes = 64 << 20;       // the output and any string built on the way
};

class Template {
 public:
  explicit Template(std::string_view source);

  // `variables` are the names the template sees, beside jinja2's range(), namespace() and dict().
  std::string render(const Dict& variables, const Limits& limits = {}) const;

 private:
  std::shared_ptr<const Body> body_;
};

}  // namespace lserve::jinja
