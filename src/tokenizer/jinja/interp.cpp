#include "tokenizer/jinja/interp.h"

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/jinja/ops.h"
#include "tokenizer/jinja/parser.h"

namespace lserve::jinja {
namespace {

// An Error that already names its line, so that enclosing statements do not name theirs too.
class LocatedError : public Error {
 public:
  using Error::Error;
};

// Nested evaluations and statements, macro calls included: with the parser's nesting limit and
// Limits::max_call_depth this keeps the C++ stack well under a thread's 8 MiB.
constexpr int kMaxRecursion = 1000;

class RecursionGuard {
 public:
  explicit RecursionGuard(int& depth) : depth_(depth) {
    LSERVE_CHECK(++depth_ <= kMaxRecursion, "the template recurses deeper than {} levels",
                 kMaxRecursion);
  }
  ~RecursionGuard() { --depth_; }
  RecursionGuard(const RecursionGuard&) = delete;
  RecursionGuard& operator=(const RecursionGuard&) = delete;

 private:
  int& depth_;
};

std::shared_ptr<const Function> builtin(std::string name, std::function<Value(CallArgs&)> fn) {
  return std::make_shared<const Function>(Function{std::move(name), std::move(fn)});
}

Value range_fn(CallArgs& a, const Limits& limits) {
  LSERVE_CHECK(!a.positional.empty() && a.positional.size() <= 3 && a.keyword.empty(),
               "range() takes 1 to 3 integer arguments");
  for (const Value& v : a.positional) {
    LSERVE_CHECK(v.type() == Value::Type::kInt || v.type() == Value::Type::kBool,
                 "range() arguments must be integers, not {}", type_name(v));
  }
  const bool one = a.positional.size() == 1;
  const int64_t start = one ? 0 : a.positional[0].as_int();
  const int64_t stop = one ? a.positional[0].as_int() : a.positional[1].as_int();
  const int64_t step = a.positional.size() == 3 ? a.positional[2].as_int() : 1;
  LSERVE_CHECK(step != 0, "range() step must not be zero");
  List out;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
    LSERVE_CHECK(static_cast<int64_t>(out.size()) < limits.max_loop_iterations,
                 "range() is longer than {} items", limits.max_loop_iterations);
    out.push_back(Value::integer(i));
    if ((step > 0 && i > INT64_MAX - step) || (step < 0 && i < INT64_MIN - step)) break;
  }
  return Value::list(std::move(out));
}

Value dict_fn(CallArgs& a, bool is_namespace) {
  auto d = make_dict();
  d->is_namespace = is_namespace;
  LSERVE_CHECK(a.positional.size() <= 1, "{}() takes at most one positional argument",
               is_namespace ? "namespace" : "dict");
  if (!a.positional.empty()) {
    const Value& init = a.positional[0];
    LSERVE_CHECK(init.is_dict(), "{}() takes a mapping, not {}",
                 is_namespace ? "namespace" : "dict", type_name(init));
    for (const auto& [k, v] : init.dict().entries) d->set(k, v);
  }
  for (auto& [k, v] : a.keyword) d->set(k, v);
  return Value::dict(d);
}

}  // namespace

Template::Template(std::string_view source) : body_(std::make_shared<const Body>(parse(source))) {}

std::string Template::render(const Dict& variables, const Limits& limits) const {
  return Interp(limits, variables).render(*body_);
}

Interp::Interp(const Limits& limits, const Dict& variables)
    : limits_(limits), variables_(variables) {
  builtins_.set("range", Value::function(builtin(
                             "range", [this](CallArgs& a) { return range_fn(a, limits_); })));
  builtins_.set("namespace", Value::function(builtin(
                                 "namespace", [](CallArgs& a) { return dict_fn(a, true); })));
  builtins_.set("dict",
                Value::function(builtin("dict", [](CallArgs& a) { return dict_fn(a, false); })));
  frames_.emplace_back();
  frames_.back().scopes.emplace_back();
}

std::string Interp::render(const Body& body) {
  std::string out;
  const Flow flow = exec(body, out);
  LSERVE_CHECK(flow == Flow::kNormal, "{{% break %}} or {{% continue %}} outside a loop");
  return out;
}

void Interp::check_size(size_t n) const {
  LSERVE_CHECK(n <= limits_.max_output_bytes, "the template output exceeds {} bytes",
               limits_.max_output_bytes);
}

void Interp::count_iterations(int64_t n) {
  iterations_ += n;
  LSERVE_CHECK(iterations_ <= limits_.max_loop_iterations,
               "the template runs more than {} loop iterations", limits_.max_loop_iterations);
}

void Interp::append(std::string& out, std::string_view piece) const {
  check_size(out.size() + piece.size());
  out.append(piece);
}

Value Interp::lookup(const std::string& name) const {
  const Frame& f = frames_.back();
  for (auto it = f.scopes.rbegin(); it != f.scopes.rend(); ++it) {
    if (auto found = it->find(name); found != it->end()) return found->second;
  }
  if (frames_.size() > 1) {
    const Scope& top = frames_.front().scopes.front();
    if (auto found = top.find(name); found != top.end()) return found->second;
  }
  if (const Value* v = variables_.find(name)) return *v;
  if (const Value* v = builtins_.find(name)) return *v;
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

void Interp::assign(const std::string& name, Value v) {
  frames_.back().scopes.back()[name] = std::move(v);
}

void Interp::assign_targets(const std::vector<std::string>& targets, const Value& v) {
  if (targets.size() == 1) {
    assign(targets[0], v);
    return;
  }
  const List items = iterate(v);
  LSERVE_CHECK(items.size() == targets.size(), "cannot unpack {} values into {} names",
               items.size(), targets.size());
  for (size_t i = 0; i < targets.size(); ++i) assign(targets[i], items[i]);
}

Interp::Flow Interp::exec(const Body& body, std::string& out) {
  for (const StmtPtr& s : body) {
    const Flow flow = exec_stmt(*s, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interp::Flow Interp::exec_stmt(const Stmt& s, std::string& out) {
  const RecursionGuard guard(depth_);
  try {
    switch (s.kind) {
      case StmtKind::kText:
        append(out, s.text);
        return Flow::kNormal;
      case StmtKind::kOutput:
        append(out, to_str(eval(*s.expr)));
        return Flow::kNormal;
      case StmtKind::kIf:
        for (size_t i = 0; i < s.bodies.size(); ++i) {
          if (i >= s.conds.size() || truthy(eval(*s.conds[i]))) return exec(s.bodies[i], out);
        }
        return Flow::kNormal;
      case StmtKind::kFor:
        return exec_for(s, out);
      case StmtKind::kSet:
        exec_set(s);
        return Flow::kNormal;
      case StmtKind::kSetBlock: {
        std::string captured;
        exec(s.bodies[0], captured);
        assign(s.targets[0], Value::string(std::move(captured)));
        return Flow::kNormal;
      }
      case StmtKind::kMacro:
        assign(s.name, define_macro(s));
        return Flow::kNormal;
      case StmtKind::kFilter: {
        std::string captured;
        exec(s.bodies[0], captured);
        CallArgs args = eval_args(*s.expr);
        append(out,
               to_str(apply_filter(*this, s.expr->name, Value::string(std::move(captured)), args)));
        return Flow::kNormal;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kGeneration:
        return exec(s.bodies[0], out);
    }
  } catch (const LocatedError&) {
    throw;
  } catch (const RaisedError&) {
    throw;
  } catch (const Error& e) {
    throw LocatedError(fmt::format("line {}: {}", s.line, e.what()));
  }
  return Flow::kNormal;
}

Interp::Flow Interp::exec_for(const Stmt& s, std::string& out) {
  List items = iterate(eval(*s.expr));
  if (s.cond) {
    // jinja2 filters first: loop.index and loop.length count only the items kept.
    List kept;
    for (Value& item : items) {
      count_iterations(1);
      frames_.back().scopes.emplace_back();
      assign_targets(s.targets, item);
      const bool keep = truthy(eval(*s.cond));
      frames_.back().scopes.pop_back();
      if (keep) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  const auto n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i) {
    count_iterations(1);
    auto loop = make_dict();
    loop->set("index0", Value::integer(i));
    loop->set("index", Value::integer(i + 1));
    loop->set("revindex0", Value::integer(n - i - 1));
    loop->set("revindex", Value::integer(n - i));
    loop->set("first", Value::boolean(i == 0));
    loop->set("last", Value::boolean(i == n - 1));
    loop->set("length", Value::integer(n));
    loop->set("depth", Value::integer(1));
    loop->set("depth0", Value::integer(0));
    loop->set("previtem", i > 0 ? items[static_cast<size_t>(i - 1)]
                                : Value::undefined("there is no previous item"));
    loop->set("nextitem", i + 1 < n ? items[static_cast<size_t>(i + 1)]
                                    : Value::undefined("there is no next item"));
    // Each iteration gets a fresh scope: what the body sets does not reach the next one.
    frames_.back().scopes.emplace_back();
    assign("loop", Value::dict(loop));
    assign_targets(s.targets, items[static_cast<size_t>(i)]);
    Flow flow = Flow::kNormal;
    try {
      flow = exec(s.bodies[0], out);
    } catch (...) {
      frames_.back().scopes.pop_back();
      throw;
    }
    frames_.back().scopes.pop_back();
    if (flow == Flow::kBreak) break;
  }
  if (n == 0 && s.bodies.size() > 1) return exec(s.bodies[1], out);
  return Flow::kNormal;
}

void Interp::exec_set(const Stmt& s) {
  Value v = eval(*s.expr);
  if (s.name.empty()) {
    assign_targets(s.targets, v);
    return;
  }
  const Value ns = lookup(s.targets[0]);
  LSERVE_CHECK(ns.is_dict() && ns.dict().is_namespace,
               "cannot assign attribute '{}' on {}: only a namespace() takes attributes", s.name,
               ns.is_undefined() ? "an undefined value" : type_name(ns));
  ns.dict().set(s.name, std::move(v));
}

Value Interp::define_macro(const Stmt& s) {
  const Stmt* def = &s;
  return Value::function(builtin(s.name, [this, def](CallArgs& a) { return call_macro(*def, a); }));
}

Value Interp::call_macro(const Stmt& s, CallArgs& a) {
  LSERVE_CHECK(static_cast<int>(frames_.size()) <= limits_.max_call_depth,
               "macro calls nest deeper than {}", limits_.max_call_depth);
  frames_.emplace_back();
  frames_.back().scopes.emplace_back();
  std::string out;
  try {
    List varargs;
    for (size_t i = 0; i < a.positional.size(); ++i) {
      if (i < s.params.size()) {
        assign(s.params[i].first, a.positional[i]);
      } else {
        varargs.push_back(a.positional[i]);
      }
    }
    auto kwargs = make_dict();
    for (auto& [k, v] : a.keyword) {
      bool is_param = false;
      for (const auto& p : s.params) is_param = is_param || p.first == k;
      if (is_param) {
        assign(k, v);
      } else {
        kwargs->set(k, v);
      }
    }
    Scope& scope = frames_.back().scopes.back();
    for (const auto& [name, def] : s.params) {
      if (scope.count(name)) continue;
      scope[name] =
          def ? eval(*def) : Value::undefined(fmt::format("parameter '{}' was not provided", name));
    }
    assign("varargs", Value::tuple(std::move(varargs)));
    assign("kwargs", Value::dict(kwargs));
    exec(s.bodies[0], out);
  } catch (...) {
    frames_.pop_back();
    throw;
  }
  frames_.pop_back();
  return Value::string(std::move(out));
}

CallArgs Interp::eval_args(const Expr& e) {
  CallArgs args;
  for (const ExprPtr& a : e.args) args.positional.push_back(eval(*a));
  for (const auto& [k, v] : e.kwargs) args.keyword.emplace_back(k, eval(*v));
  return args;
}

Value Interp::call(const Value& callee, CallArgs& args) {
  if (callee.type() == Value::Type::kFunction) return callee.function().call(args);
  if (callee.is_undefined()) fail("{}", callee.undefined_what());
  fail("'{}' is not callable", type_name(callee));
}

Value Interp::eval_call(const Expr& e) {
  if (e.target->kind == ExprKind::kGetAttr) {
    const Value obj = eval(*e.target->target);
    CallArgs args = eval_args(e);
    if (auto r = call_method(*this, obj, e.target->name, args)) return std::move(*r);
    return call(get_attr(obj, e.target->name), args);
  }
  const Value callee = eval(*e.target);
  CallArgs args = eval_args(e);
  return call(callee, args);
}

Value Interp::eval_compare(const Expr& e) {
  Value left = eval(*e.args[0]);
  for (size_t i = 0; i < e.ops.size(); ++i) {
    Value right = eval(*e.args[i + 1]);
    const std::string& op = e.ops[i];
    bool r = false;
    if (op == "==") {
      r = equals(left, right);
    } else if (op == "!=") {
      r = !equals(left, right);
    } else if (op == "<") {
      r = less(left, right);
    } else if (op == ">") {
      r = less(right, left);
    } else if (op == "<=") {
      r = !less(right, left);
    } else if (op == ">=") {
      r = !less(left, right);
    } else if (op == "in") {
      r = contains(right, left);
    } else {
      r = !contains(right, left);
    }
    if (!r) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interp::eval(const Expr& e) {
  // Bounds the C++ stack whatever mix of nesting and macro recursion a template uses.
  const RecursionGuard guard(depth_);
  return eval_inner(e);
}

Value Interp::eval_inner(const Expr& e) {
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.literal;
    case ExprKind::kName:
      return lookup(e.name);
    case ExprKind::kList: {
      List items;
      for (const ExprPtr& a : e.args) items.push_back(eval(*a));
      return e.tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
    }
    case ExprKind::kDict: {
      auto d = make_dict();
      for (size_t i = 0; i < e.args.size(); ++i) {
        const Value key = eval(*e.args[i]);
        LSERVE_CHECK(key.is_string(), "dict keys must be strings, not {}", type_name(key));
        d->set(key.str(), eval(*e.args2[i]));
      }
      return Value::dict(d);
    }
    case ExprKind::kGetAttr:
      return get_attr(eval(*e.target), e.name);
    case ExprKind::kGetItem:
      return get_item(eval(*e.target), eval(*e.args[0]));
    case ExprKind::kSlice: {
      const Value obj = eval(*e.target);
      Value parts[3];
      for (int i = 0; i < 3; ++i) {
        parts[i] = e.args[i] ? eval(*e.args[i]) : Value::none();
      }
      return slice(obj, parts[0], parts[1], parts[2]);
    }
    case ExprKind::kCall:
      return eval_call(e);
    case ExprKind::kFilter: {
      const Value v = eval(*e.target);
      CallArgs args = eval_args(e);
      return apply_filter(*this, e.name, v, args);
    }
    case ExprKind::kTest: {
      const Value v = eval(*e.target);
      CallArgs args = eval_args(e);
      return Value::boolean(apply_test(*this, e.name, v, args) != e.negated);
    }
    case ExprKind::kUnary:
      if (e.name == "not") return Value::boolean(!truthy(eval(*e.target)));
      return unary_op(e.name, eval(*e.target));
    case ExprKind::kBinary: {
      if (e.name == "and" || e.name == "or") {
        Value left = eval(*e.args[0]);
        if (truthy(left) == (e.name == "or")) return left;
        return eval(*e.args[1]);
      }
      const Value left = eval(*e.args[0]);
      const Value right = eval(*e.args[1]);
      return binary_op(e.name, left, right, limits_);
    }
    case ExprKind::kCompare:
      return eval_compare(e);
    case ExprKind::kCond:
      if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
      return e.args[2] ? eval(*e.args[2]) : Value::undefined("the condition was false");
  }
  return Value();
}

}  // namespace lserve::jinja
