#include "tokenizer/jinja/ops.h"

#include <fmt/format.h>

#include <cmath>

#include "core/error.h"
#include "tokenizer/jinja/text.h"

namespace lserve::jinja {
namespace {

[[noreturn]] void unsupported(std::string_view op, const Value& a, const Value& b) {
  if (a.is_undefined()) fail("{}", a.undefined_what());
  if (b.is_undefined()) fail("{}", b.undefined_what());
  fail("unsupported operand types for {}: {} and {}", op, type_name(a), type_name(b));
}

bool is_int(const Value& v) {
  return v.type() == Value::Type::kInt || v.type() == Value::Type::kBool;
}

constexpr const char* kOverflow = "integer overflow (lserve's integers are 64-bit)";

int64_t add(int64_t a, int64_t b) {
  int64_t r = 0;
  LSERVE_CHECK(!__builtin_add_overflow(a, b, &r), "{}", kOverflow);
  return r;
}
int64_t sub(int64_t a, int64_t b) {
  int64_t r = 0;
  LSERVE_CHECK(!__builtin_sub_overflow(a, b, &r), "{}", kOverflow);
  return r;
}
int64_t mul(int64_t a, int64_t b) {
  int64_t r = 0;
  LSERVE_CHECK(!__builtin_mul_overflow(a, b, &r), "{}", kOverflow);
  return r;
}

int64_t floor_div(int64_t a, int64_t b) {
  LSERVE_CHECK(b != 0, "integer division or modulo by zero");
  LSERVE_CHECK(!(a == INT64_MIN && b == -1), "{}", kOverflow);
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

Value repeat(const Value& seq, int64_t n, const Limits& limits) {
  // An empty sequence repeated is empty however large n is (checked first: looping n times over
  // nothing took seconds for n ~ 1e8, and the size limits below never trip for it).
  const bool empty = seq.is_string() ? seq.str().empty() : seq.items().empty();
  if (n <= 0 || empty) return seq.is_string() ? Value::string("") : Value::list({});
  if (seq.is_string()) {
    const size_t len = seq.str().size();
    LSERVE_CHECK(static_cast<uint64_t>(n) <= limits.max_output_bytes / len,
                 "a repeated string would exceed {} bytes", limits.max_output_bytes);
    std::string out;
    out.reserve(len * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += seq.str();
    return Value::string(std::move(out));
  }
  const size_t len = seq.items().size();
  LSERVE_CHECK(n <= limits.max_loop_iterations / static_cast<int64_t>(len),
               "a repeated list would exceed {} items", limits.max_loop_iterations);
  List out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return Value::list(std::move(out));
}

// Python's slice.indices(): the positions a slice visits in a sequence of n items.
std::vector<int64_t> slice_positions(int64_t n, const Value& start, const Value& stop,
                                     const Value& step) {
  auto as_index = [](const Value& v, const char* what) {
    LSERVE_CHECK(is_int(v), "slice {} must be an integer or none, not {}", what, type_name(v));
    return v.as_int();
  };
  const int64_t st = step.is_none() ? 1 : as_index(step, "step");
  LSERVE_CHECK(st != 0, "slice step cannot be zero");
  auto clamp = [&](const Value& v, int64_t def, const char* what) {
    if (v.is_none()) return def;
    int64_t i = as_index(v, what);
    if (i < 0) i = std::max<int64_t>(i + n, st < 0 ? -1 : 0);
    return std::min(i, st < 0 ? n - 1 : n);
  };
  const int64_t b = clamp(start, st < 0 ? n - 1 : 0, "start");
  const int64_t e = clamp(stop, st < 0 ? -1 : n, "stop");
  std::vector<int64_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(i);
  return out;
}

}  // namespace

Value binary_op(std::string_view op, const Value& a, const Value& b, const Limits& limits) {
  if (op == "~") {
    std::string s = to_str(a);
    const std::string t = to_str(b);
    LSERVE_CHECK(s.size() + t.size() <= limits.max_output_bytes,
                 "a concatenated string would exceed {} bytes", limits.max_output_bytes);
    return Value::string(s + t);
  }
  const bool nums = a.is_number() && b.is_number();
  const bool ints = is_int(a) && is_int(b);
  if (op == "+") {
    if (ints) return Value::integer(add(a.as_int(), b.as_int()));
    if (nums) return Value::number(a.as_float() + b.as_float());
    if (a.is_string() && b.is_string()) {
      LSERVE_CHECK(a.str().size() + b.str().size() <= limits.max_output_bytes,
                   "a concatenated string would exceed {} bytes", limits.max_output_bytes);
      return Value::string(a.str() + b.str());
    }
    if (a.is_list() && b.is_list()) {
      LSERVE_CHECK(
          static_cast<int64_t>(a.items().size() + b.items().size()) <= limits.max_loop_iterations,
          "a concatenated list would exceed {} items", limits.max_loop_iterations);
      List out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      if (a.is_tuple() && b.is_tuple()) return Value::tuple(std::move(out));
      return Value::list(std::move(out));
    }
  } else if (op == "-") {
    if (ints) return Value::integer(sub(a.as_int(), b.as_int()));
    if (nums) return Value::number(a.as_float() - b.as_float());
  } else if (op == "*") {
    if (ints) return Value::integer(mul(a.as_int(), b.as_int()));
    if (nums) return Value::number(a.as_float() * b.as_float());
    if ((a.is_string() || a.is_list()) && is_int(b)) return repeat(a, b.as_int(), limits);
    if (is_int(a) && (b.is_string() || b.is_list())) return repeat(b, a.as_int(), limits);
  } else if (op == "/") {
    if (nums) {
      LSERVE_CHECK(b.as_float() != 0.0, "division by zero");
      return Value::number(a.as_float() / b.as_float());
    }
  } else if (op == "//") {
    if (ints) return Value::integer(floor_div(a.as_int(), b.as_int()));
    if (nums) {
      LSERVE_CHECK(b.as_float() != 0.0, "float floor division by zero");
      return Value::number(std::floor(a.as_float() / b.as_float()));
    }
  } else if (op == "%") {
    if (ints)
      return Value::integer(sub(a.as_int(), mul(floor_div(a.as_int(), b.as_int()), b.as_int())));
    if (nums) {
      LSERVE_CHECK(b.as_float() != 0.0, "float modulo by zero");
      double m = std::fmod(a.as_float(), b.as_float());
      if (m != 0.0 && ((m < 0) != (b.as_float() < 0))) m += b.as_float();
      return Value::number(m);
    }
    if (a.is_string()) fail("string formatting with '%' is not supported");
  } else if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), acc = 1;
      while (e > 0) {
        if (e & 1) acc = mul(acc, base);
        e >>= 1;
        if (e > 0) base = mul(base, base);
      }
      return Value::integer(acc);
    }
    if (nums) return Value::number(std::pow(a.as_float(), b.as_float()));
  }
  unsupported(op, a, b);
}

Value unary_op(std::string_view op, const Value& a) {
  if (is_int(a)) {
    if (op == "+") return Value::integer(a.as_int());
    LSERVE_CHECK(a.as_int() != INT64_MIN, "{}", kOverflow);
    return Value::integer(-a.as_int());
  }
  if (a.type() == Value::Type::kFloat) {
    return Value::number(op == "-" ? -a.as_float() : a.as_float());
  }
  if (a.is_undefined()) fail("{}", a.undefined_what());
  fail("bad operand type for unary {}: {}", op, type_name(a));
}

bool contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::kString:
      LSERVE_CHECK(item.is_string(), "'in <string>' requires a string on the left, not {}",
                   type_name(item));
      return container.str().find(item.str()) != std::string::npos;
    case Value::Type::kList:
      for (const Value& v : container.items()) {
        if (equals(v, item)) return true;
      }
      return false;
    case Value::Type::kDict:
      return item.is_string() && container.dict().find(item.str()) != nullptr;
    case Value::Type::kUndefined:
      return false;
    default:
      fail("argument of type {} is not iterable", type_name(container));
  }
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail("{}", obj.undefined_what());
  if (obj.is_dict()) {
    if (const Value* v = obj.dict().find(name)) return *v;
  }
  return Value::undefined(fmt::format("{} has no attribute '{}'", type_name(obj), name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail("{}", obj.undefined_what());
  if (obj.is_dict() && key.is_string()) {
    if (const Value* v = obj.dict().find(key.str())) return *v;
  } else if ((obj.is_list() || obj.is_string()) && is_int(key)) {
    const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.items().size())
                                    : static_cast<int64_t>(text::length(obj.str()));
    int64_t i = key.as_int();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (obj.is_list()) return obj.items()[static_cast<size_t>(i)];
      const std::vector<size_t> at = text::code_points(obj.str());
      const auto k = static_cast<size_t>(i);
      return Value::string(obj.str().substr(at[k], at[k + 1] - at[k]));
    }
  }
  return Value::undefined(fmt::format("{} has no element {}", type_name(obj), repr(key)));
}

Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  if (obj.is_undefined()) fail("{}", obj.undefined_what());
  if (obj.is_list()) {
    List out;
    for (int64_t i : slice_positions(static_cast<int64_t>(obj.items().size()), start, stop, step)) {
      out.push_back(obj.items()[static_cast<size_t>(i)]);
    }
    return obj.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
  }
  if (obj.is_string()) {
    const std::vector<size_t> at = text::code_points(obj.str());
    std::string out;
    for (int64_t i : slice_positions(static_cast<int64_t>(at.size() - 1), start, stop, step)) {
      const auto k = static_cast<size_t>(i);
      out.append(obj.str(), at[k], at[k + 1] - at[k]);
    }
    return Value::string(std::move(out));
  }
  fail("{} cannot be sliced", type_name(obj));
}

List iterate(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return {};
    case Value::Type::kList:
      return v.items();
    case Value::Type::kDict: {
      List keys;
      for (const auto& [k, item] : v.dict().entries) keys.push_back(Value::string(k));
      return keys;
    }
    case Value::Type::kString: {
      const std::vector<size_t> at = text::code_points(v.str());
      List chars;
      for (size_t k = 0; k + 1 < at.size(); ++k) {
        chars.push_back(Value::string(v.str().substr(at[k], at[k + 1] - at[k])));
      }
      return chars;
    }
    default:
      fail("{} is not iterable", type_name(v));
  }
}

const Value* arg(const CallArgs& args, size_t pos, std::string_view name) {
  if (pos < args.positional.size()) return &args.positional[pos];
  for (const auto& [k, v] : args.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

std::string str_arg(const CallArgs& args, size_t pos, std::string_view name, std::string_view what,
                    std::string fallback) {
  const Value* v = arg(args, pos, name);
  if (!v || v->is_none()) return fallback;
  LSERVE_CHECK(v->is_string(), "{}: argument '{}' must be a string, not {}", what, name,
               type_name(*v));
  return v->str();
}

int64_t int_arg(const CallArgs& args, size_t pos, std::string_view name, std::string_view what,
                int64_t fallback) {
  const Value* v = arg(args, pos, name);
  if (!v || v->is_none()) return fallback;
  LSERVE_CHECK(is_int(*v), "{}: argument '{}' must be an integer, not {}", what, name,
               type_name(*v));
  return v->as_int();
}

}  // namespace lserve::jinja
