// Walks a parsed template: statements, scopes (jinja2's: a loop body's assignments stay in the
// iteration, macros see the template's top level), and expression evaluation.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/template.h"

namespace lserve::jinja {

class Interp {
 public:
  Interp(const Limits& limits, const Dict& variables);

  std::string render(const Body& body);
  Value eval(const Expr& e);
  Value eval_inner(const Expr& e);
  Value call(const Value& callee, CallArgs& args);
  const Limits& limits() const { return limits_; }
  // Error when a string of n bytes would exceed the output limit.
  void check_size(size_t n) const;
  // Counts toward max_loop_iterations (loops, and work proportional to list sizes).
  void count_iterations(int64_t n);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Scope = std::unordered_map<std::string, Value>;
  struct Frame {
    std::vector<Scope> scopes;
  };

  Flow exec(const Body& body, std::string& out);
  Flow exec_stmt(const Stmt& s, std::string& out);
  Flow exec_for(const Stmt& s, std::string& out);
  void exec_set(const Stmt& s);
  Value define_macro(const Stmt& s);
  Value call_macro(const Stmt& s, CallArgs& args);
  void append(std::string& out, std::string_view piece) const;

  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void assign_targets(const std::vector<std::string>& targets, const Value& v);

  CallArgs eval_args(const Expr& e);
  Value eval_call(const Expr& e);
  Value eval_compare(const Expr& e);

  const Limits& limits_;
  const Dict& variables_;
  Dict builtins_;
  std::vector<Frame> frames_;  // [0]: the template; each macro call adds one
  int64_t iterations_ = 0;
  int depth_ = 0;  // evaluation and statement recursion, macro calls included
};

}  // namespace lserve::jinja
