// The parsed template: expressions and statements as the parser builds them and the
// interpreter walks them.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace lserve::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kLiteral,  // literal
  kName,     // name
  kList,     // args (tuples are lists too)
  kDict,     // kwargs: key expressions in args, values in args2 (same order)
  kGetAttr,  // target.name
  kGetItem,  // target[args[0]]
  kSlice,    // target[args[0]:args[1]:args[2]], any may be null
  kCall,     // target(args, kwargs)
  kFilter,   // target | name(args, kwargs)
  kTest,     // target is [not] name(args)
  kUnary,    // name ("-", "+", "not") target
  kBinary,   // args[0] name args[1]: arithmetic, "~", "and", "or"
  kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ...
  kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value literal;
  std::string name;
  ExprPtr target;
  std::vector<ExprPtr> args;
  std::vector<ExprPtr> args2;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
  bool negated = false;  // `is not`
  bool tuple = false;    // a kList written as a tuple
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // conds[i] -> bodies[i]; a last body without condition is the else
  kFor,       // for targets in expr [if cond]: bodies[0], else bodies[1]
  kSet,       // set targets = expr, or set targets[0].attr = expr
  kSetBlock,  // set targets[0] %}bodies[0]{% endset
  kMacro,     // macro name(params) bodies[0]
  kFilter,    // filter expr (a kFilter with an empty target) bodies[0]
  kBreak,
  kContinue,
  kGeneration,  // Hugging Face's {% generation %}: renders its body
};

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;
  std::string name;  // macro name, or the attribute of `set ns.attr`
  ExprPtr expr;
  ExprPtr cond;  // for ... if cond
  std::vector<ExprPtr> conds;
  std::vector<Body> bodies;
  std::vector<std::string> targets;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters and defaults
};

}  // namespace lserve::jinja
