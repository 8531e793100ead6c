// jinja2's filters and tests that chat templates use, with tojson as Hugging Face overrides it.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>

#include "core/error.h"
#include "tokenizer/jinja/interp.h"
#include "tokenizer/jinja/ops.h"
#include "tokenizer/jinja/text.h"

namespace lserve::jinja {
namespace {

bool is_int(const Value& v) {
  return v.type() == Value::Type::kInt || v.type() == Value::Type::kBool;
}

// An attribute path as selectattr/map/sort take it: "a.b" or an index "0".
Value attribute_of(const Value& v, const std::string& path) {
  Value cur = v;
  size_t from = 0;
  while (true) {
    const size_t dot = path.find('.', from);
    const std::string part = path.substr(from, dot == std::string::npos ? dot : dot - from);
    int64_t index = 0;
    const auto r = std::from_chars(part.data(), part.data() + part.size(), index);
    if (r.ec == std::errc() && r.ptr == part.data() + part.size() && !part.empty()) {
      cur = get_item(cur, Value::integer(index));
    } else {
      cur = get_item(cur, Value::string(part));
    }
    if (dot == std::string::npos) return cur;
    from = dot + 1;
  }
}

// Arguments after the first `skip` positional ones, for a test or filter named inside another
// filter (select('equalto', 2), map('upper')).
CallArgs rest_args(const CallArgs& a, size_t skip) {
  CallArgs out;
  for (size_t i = skip; i < a.positional.size(); ++i) out.positional.push_back(a.positional[i]);
  return out;
}

Value select_filter(Interp& in, const std::string& name, const Value& v, CallArgs& a) {
  const bool by_attr = name == "selectattr" || name == "rejectattr";
  const bool keep_if = name == "select" || name == "selectattr";
  const std::string attr = by_attr ? str_arg(a, 0, "attribute", name, "") : "";
  LSERVE_CHECK(!by_attr || !attr.empty(), "{}: an attribute name is required", name);
  const size_t test_at = by_attr ? 1 : 0;
  const Value* test = arg(a, test_at, "");
  LSERVE_CHECK(!test || test->is_string(), "{}: the test must be named by a string", name);
  CallArgs test_args = rest_args(a, test_at + 1);
  List out;
  const List items = iterate(v);
  in.count_iterations(static_cast<int64_t>(items.size()));
  for (const Value& item : items) {
    const Value subject = by_attr ? attribute_of(item, attr) : item;
    const bool pass = test ? apply_test(in, test->str(), subject, test_args) : truthy(subject);
    if (pass == keep_if) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value map_filter(Interp& in, const Value& v, CallArgs& a) {
  const List items = iterate(v);
  in.count_iterations(static_cast<int64_t>(items.size()));
  List out;
  if (const Value* attr = arg(a, a.positional.size(), "attribute")) {
    LSERVE_CHECK(attr->is_string(), "map: attribute must be a string");
    const Value* def = arg(a, a.positional.size(), "default");
    for (const Value& item : items) {
      Value x = attribute_of(item, attr->str());
      out.push_back(x.is_undefined() && def ? *def : x);
    }
    return Value::list(std::move(out));
  }
  LSERVE_CHECK(!a.positional.empty() && a.positional[0].is_string(),
               "map: give a filter name or attribute=");
  CallArgs filter_args = rest_args(a, 1);
  for (const Value& item : items) {
    out.push_back(apply_filter(in, a.positional[0].str(), item, filter_args));
  }
  return Value::list(std::move(out));
}

std::string join_filter(Interp& in, const Value& v, CallArgs& a) {
  const std::string sep = str_arg(a, 0, "d", "join", "");
  const Value* attr = arg(a, 1, "attribute");
  std::string out;
  bool first = true;
  for (const Value& item : iterate(v)) {
    if (!first) out += sep;
    first = false;
    out += to_str(attr && attr->is_string() ? attribute_of(item, attr->str()) : item);
    in.check_size(out.size());
  }
  return out;
}

std::string indent_filter(Interp& in, const std::string& s, CallArgs& a) {
  const Value* w = arg(a, 0, "width");
  std::string pad = "    ";
  if (w && w->is_string()) {
    pad = w->str();
  } else if (w) {
    LSERVE_CHECK(is_int(*w) && w->as_int() >= 0 && w->as_int() <= 1000,
                 "indent: width must be an integer in [0, 1000] or a string");
    pad.assign(static_cast<size_t>(w->as_int()), ' ');
  }
  const Value* first = arg(a, 1, "first");
  const Value* blank = arg(a, 2, "blank");
  const std::vector<std::string> lines = text::split(s, "\n", -1);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i) out += '\n';
    const bool want = i == 0 ? (first && truthy(*first)) : true;
    if (want && (!lines[i].empty() || (blank && truthy(*blank)))) out += pad;
    out += lines[i];
    in.check_size(out.size());
  }
  return out;
}

std::string escape_html(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&#34;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Python's int() and float() accept '_' between digits; strtod's hexadecimal forms they do not.
std::optional<std::string> python_number_text(std::string_view raw) {
  const std::string_view s = text::strip(raw);
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == 'x' || c == 'X' || c == 'p' || c == 'P') return std::nullopt;
    if (c == '_') {
      const bool between = i > 0 && i + 1 < s.size() &&
                           std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
                           std::isdigit(static_cast<unsigned char>(s[i + 1]));
      if (!between) return std::nullopt;
      continue;
    }
    out += c;
  }
  if (out.empty()) return std::nullopt;
  return out;
}

Value int_filter(const Value& v, CallArgs& a) {
  const Value* def = arg(a, 0, "default");
  const Value fallback = def ? *def : Value::integer(0);
  if (is_int(v)) return Value::integer(v.as_int());
  if (v.type() == Value::Type::kFloat) {
    if (!std::isfinite(v.as_float()) || std::fabs(v.as_float()) >= 9.2e18) return fallback;
    return Value::integer(static_cast<int64_t>(v.as_float()));
  }
  const std::optional<std::string> s = v.is_string() ? python_number_text(v.str()) : std::nullopt;
  if (s) {
    int64_t i = 0;
    const char* begin = s->data() + (s->front() == '+' ? 1 : 0);
    const auto r = std::from_chars(begin, s->data() + s->size(), i);
    if (r.ec == std::errc() && r.ptr == s->data() + s->size()) return Value::integer(i);
    char* end = nullptr;
    const double d = std::strtod(s->c_str(), &end);
    if (end == s->c_str() + s->size() && std::isfinite(d) && std::fabs(d) < 9.2e18) {
      return Value::integer(static_cast<int64_t>(d));
    }
  }
  return fallback;
}

Value float_filter(const Value& v, CallArgs& a) {
  const Value* def = arg(a, 0, "default");
  const Value fallback = def ? *def : Value::number(0.0);
  if (v.is_number()) return Value::number(v.as_float());
  const std::optional<std::string> s = v.is_string() ? python_number_text(v.str()) : std::nullopt;
  if (s) {
    char* end = nullptr;
    const double d = std::strtod(s->c_str(), &end);
    if (end == s->c_str() + s->size()) return Value::number(d);
  }
  return fallback;
}

Value sort_filter(Interp& in, const Value& v, CallArgs& a) {
  List items = iterate(v);
  in.count_iterations(static_cast<int64_t>(items.size()));
  const Value* rev = arg(a, 0, "reverse");
  const Value* attr = arg(a, 2, "attribute");
  auto key = [&](const Value& x) {
    return attr && attr->is_string() ? attribute_of(x, attr->str()) : x;
  };
  std::stable_sort(items.begin(), items.end(),
                   [&](const Value& x, const Value& y) { return less(key(x), key(y)); });
  if (rev && truthy(*rev)) std::reverse(items.begin(), items.end());
  return Value::list(std::move(items));
}

Value min_max(const Value& v, bool want_max) {
  const List items = iterate(v);
  if (items.empty()) return Value::undefined("min/max of an empty sequence");
  Value best = items[0];
  for (const Value& x : items) {
    if (want_max ? less(best, x) : less(x, best)) best = x;
  }
  return best;
}

}  // namespace

Value apply_filter(Interp& in, const std::string& name, const Value& v, CallArgs& a) {
  if (name == "default" || name == "d") {
    const Value* def = arg(a, 0, "default_value");
    const Value* boolean = arg(a, 1, "boolean");
    const bool use = v.is_undefined() || (boolean && truthy(*boolean) && !truthy(v));
    return use ? (def ? *def : Value::string("")) : v;
  }
  if (name == "safe") return v;
  if (name == "tojson") {
    // Hugging Face's signature: tojson(x, ensure_ascii=False, indent=None, separators=None,
    // sort_keys=False).
    const Value* ascii = arg(a, 0, "ensure_ascii");
    LSERVE_CHECK(!ascii || !truthy(*ascii), "tojson: ensure_ascii=True is not supported");
    const Value* seps = arg(a, 2, "separators");
    LSERVE_CHECK(!seps || seps->is_none(), "tojson: separators are not supported");
    const Value* ind = arg(a, 1, "indent");
    int indent = -1;
    if (ind && !ind->is_none()) {
      LSERVE_CHECK(is_int(*ind) && ind->as_int() >= 0 && ind->as_int() <= 64,
                   "tojson: indent must be an integer in [0, 64]");
      indent = static_cast<int>(ind->as_int());
    }
    const Value* sort = arg(a, 3, "sort_keys");
    std::string out = to_json(v, indent, sort && truthy(*sort));
    in.check_size(out.size());
    return Value::string(std::move(out));
  }
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::integer(static_cast<int64_t>(text::length(v.str())));
    if (v.is_list()) return Value::integer(static_cast<int64_t>(v.items().size()));
    if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict().entries.size()));
    if (v.is_undefined()) return Value::integer(0);
    fail("{} has no length", type_name(v));
  }
  if (name == "list") return Value::list(iterate(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::list({});
    LSERVE_CHECK(v.is_dict(), "items: expected a mapping, not {}", type_name(v));
    CallArgs none;
    return *call_method(in, v, "items", none);
  }
  if (name == "first" || name == "last") {
    const List items = iterate(v);
    if (items.empty()) return Value::undefined(fmt::format("{} of an empty sequence", name));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") return Value::string(join_filter(in, v, a));
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    return select_filter(in, name, v, a);
  }
  if (name == "map") return map_filter(in, v, a);
  if (name == "int") return int_filter(v, a);
  if (name == "float") return float_filter(v, a);
  if (name == "abs") {
    if (is_int(v)) return unary_op(v.as_int() < 0 ? "-" : "+", v);
    if (v.type() == Value::Type::kFloat) return Value::number(std::fabs(v.as_float()));
    fail("abs: expected a number, not {}", type_name(v));
  }
  if (name == "round") {
    LSERVE_CHECK(v.is_number(), "round: expected a number, not {}", type_name(v));
    const int64_t digits = int_arg(a, 0, "precision", "round", 0);
    const std::string method = str_arg(a, 1, "method", "round", "common");
    LSERVE_CHECK(digits >= -308 && digits <= 308, "round: precision out of range");
    if (method == "common" && digits >= 0 && std::isfinite(v.as_float())) {
      // Python rounds the exact binary value to `digits` decimals, ties to even: what printf's
      // correctly rounded "%.*f" does.
      char buf[512];
      std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(digits, 100)),
                    v.as_float());
      return Value::number(std::strtod(buf, nullptr));
    }
    const double scale = std::pow(10.0, static_cast<double>(digits));
    double x = v.as_float() * scale;
    x = method == "floor" ? std::floor(x) : method == "ceil" ? std::ceil(x) : std::nearbyint(x);
    return Value::number(x / scale);
  }
  if (name == "reverse") {
    if (v.is_string()) {
      return slice(v, Value::none(), Value::none(), Value::integer(-1));
    }
    List items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::list(std::move(items));
  }
  if (name == "sort") return sort_filter(in, v, a);
  if (name == "unique") {
    List out;
    const List items = iterate(v);
    for (const Value& x : items) {
      in.count_iterations(static_cast<int64_t>(out.size() / 64 + 1));
      bool seen = false;
      for (const Value& y : out) seen = seen || equals(x, y);
      if (!seen) out.push_back(x);
    }
    return Value::list(std::move(out));
  }
  if (name == "min" || name == "max") return min_max(v, name == "max");
  if (name == "sum") {
    Value total = Value::integer(0);
    for (const Value& x : iterate(v)) total = binary_op("+", total, x, in.limits());
    return total;
  }
  if (name == "dictsort") {
    LSERVE_CHECK(v.is_dict(), "dictsort: expected a mapping, not {}", type_name(v));
    CallArgs none;
    List items = call_method(in, v, "items", none)->items();
    std::stable_sort(items.begin(), items.end(), [](const Value& x, const Value& y) {
      return less(x.items()[0], y.items()[0]);
    });
    return Value::list(std::move(items));
  }
  // The rest work on the value as a string.
  const std::string s = to_str(v);
  if (name == "string") return Value::string(s);
  if (name == "trim") {
    return Value::string(std::string(text::strip(s, str_arg(a, 0, "chars", "trim", ""))));
  }
  if (name == "upper") return Value::string(text::upper(s));
  if (name == "lower") return Value::string(text::lower(s));
  if (name == "capitalize") return Value::string(text::capitalize(s));
  if (name == "title") return Value::string(text::title_words(s));
  if (name == "replace") {
    LSERVE_CHECK(arg(a, 0, "old") && arg(a, 1, "new"), "replace: takes two strings");
    return Value::string(text::replace(s, to_str(*arg(a, 0, "old")), to_str(*arg(a, 1, "new")),
                                       int_arg(a, 2, "count", "replace", -1),
                                       in.limits().max_output_bytes));
  }
  if (name == "indent") return Value::string(indent_filter(in, s, a));
  if (name == "escape" || name == "e") return Value::string(escape_html(s));
  fail("unknown filter '{}'", name);
}

bool has_test(const std::string& name) {
  static constexpr std::string_view kTests[] = {
      "defined", "undefined", "none",  "string",  "mapping", "iterable",    "sequence",
      "number",  "integer",   "float", "boolean", "true",    "false",       "callable",
      "equalto", "eq",        "==",    "ne",      "!=",      "sameas",      "lt",
      "<",       "lessthan",  "le",    "<=",      "gt",      ">",           "greaterthan",
      "ge",      ">=",        "in",    "odd",     "even",    "divisibleby", "lower",
      "upper",   "escaped"};
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

bool apply_test(Interp& in, const std::string& name, const Value& v, CallArgs& a) {
  using T = Value::Type;
  auto other = [&]() -> const Value& {
    const Value* x = arg(a, 0, "other");
    LSERVE_CHECK(x, "the test '{}' takes an argument", name);
    return *x;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.type() == T::kInt;
  if (name == "float") return v.type() == T::kFloat;
  if (name == "boolean") return v.type() == T::kBool;
  if (name == "true") return v.type() == T::kBool && v.as_bool();
  if (name == "false") return v.type() == T::kBool && !v.as_bool();
  if (name == "callable") return v.type() == T::kFunction;
  if (name == "escaped") return false;
  if (name == "equalto" || name == "eq" || name == "==") return equals(v, other());
  if (name == "ne" || name == "!=") return !equals(v, other());
  if (name == "sameas") {
    const Value& o = other();
    // Python's identity: scalars of one type and value are the same object as far as templates
    // can tell (small integers and interned strings are); containers must be the same one.
    if (v.is_dict() || o.is_dict()) return v.is_dict() && o.is_dict() && &v.dict() == &o.dict();
    if (v.is_list() || o.is_list()) {
      return v.is_list() && o.is_list() && &v.items() == &o.items();
    }
    return v.type() == o.type() && equals(v, o);
  }
  if (name == "lt" || name == "<" || name == "lessthan") return less(v, other());
  if (name == "le" || name == "<=") return !less(other(), v);
  if (name == "gt" || name == ">" || name == "greaterthan") return less(other(), v);
  if (name == "ge" || name == ">=") return !less(v, other());
  if (name == "in") return contains(other(), v);
  if (name == "odd" || name == "even" || name == "divisibleby") {
    LSERVE_CHECK(is_int(v), "the test '{}' needs an integer, not {}", name, type_name(v));
    if (name == "divisibleby") {
      const Value& d = other();
      LSERVE_CHECK(is_int(d) && d.as_int() != 0, "divisibleby needs a non-zero integer");
      return d.as_int() == -1 || v.as_int() % d.as_int() == 0;
    }
    return (v.as_int() % 2 != 0) == (name == "odd");
  }
  if (name == "lower" || name == "upper") {
    // str.islower() / isupper(): at least one cased character, and all of them in that case.
    const std::string s = to_str(v);
    const bool cased = text::lower(s) != text::upper(s);
    return cased && (name == "lower" ? text::lower(s) == s : text::upper(s) == s);
  }
  (void)in;
  fail("unknown test '{}'", name);
}

}  // namespace lserve::jinja
