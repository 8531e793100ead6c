// The methods of str, dict and list that chat templates call. Methods that would change a value
// (list.append, dict.update, ...) are absent, as in jinja2's immutable sandbox that Hugging Face
// renders with.
#include <fmt/format.h>

#include <cctype>

#include "core/error.h"
#include "tokenizer/jinja/interp.h"
#include "tokenizer/jinja/ops.h"
#include "tokenizer/jinja/text.h"

namespace lserve::jinja {
namespace {

// startswith/endswith take a string or a tuple (list) of strings.
bool affix_matches(const Value& a, const std::string& s, bool prefix, std::string_view what) {
  auto one = [&](const Value& v) {
    LSERVE_CHECK(v.is_string(), "{}: the argument must be a string or a list of strings, not {}",
                 what, type_name(v));
    return prefix ? s.starts_with(v.str()) : s.ends_with(v.str());
  };
  if (!a.is_list()) return one(a);
  for (const Value& v : a.items()) {
    if (one(v)) return true;
  }
  return false;
}

List strings(const std::vector<std::string>& parts) {
  List out;
  out.reserve(parts.size());
  for (const std::string& p : parts) out.push_back(Value::string(p));
  return out;
}

bool all_chars(const std::string& s, int (*pred)(int)) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!pred(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

std::optional<Value> string_method(Interp& in, const std::string& s, const std::string& name,
                                   CallArgs& a) {
  const std::string what = "str." + name + "()";
  if (name == "startswith" || name == "endswith") {
    const Value* v = arg(a, 0, "prefix");
    LSERVE_CHECK(v != nullptr, "{} takes one argument", what);
    return Value::boolean(affix_matches(*v, s, name == "startswith", what));
  }
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const std::string chars = str_arg(a, 0, "chars", what, "");
    return Value::string(std::string(text::strip(s, chars, name != "rstrip", name != "lstrip")));
  }
  if (name == "split") {
    const std::string sep = str_arg(a, 0, "sep", what, "");
    const Value* given = arg(a, 0, "sep");
    LSERVE_CHECK(!given || given->is_none() || !sep.empty(), "{}: empty separator", what);
    List parts = strings(text::split(s, sep, int_arg(a, 1, "maxsplit", what, -1)));
    in.count_iterations(static_cast<int64_t>(parts.size()));
    return Value::list(std::move(parts));
  }
  if (name == "splitlines") {
    std::vector<std::string> lines = text::split(s, "\n", -1);
    if (!lines.empty() && lines.back().empty()) lines.pop_back();
    in.count_iterations(static_cast<int64_t>(lines.size()));
    return Value::list(strings(lines));
  }
  if (name == "replace") {
    const std::string from = str_arg(a, 0, "old", what, "");
    const std::string to = str_arg(a, 1, "new", what, "");
    LSERVE_CHECK(arg(a, 0, "old") && arg(a, 1, "new"), "{} takes two strings", what);
    return Value::string(
        text::replace(s, from, to, int_arg(a, 2, "count", what, -1), in.limits().max_output_bytes));
  }
  if (name == "upper") return Value::string(text::upper(s));
  if (name == "lower") return Value::string(text::lower(s));
  if (name == "title") return Value::string(text::title(s));
  if (name == "capitalize") return Value::string(text::capitalize(s));
  if (name == "find" || name == "rfind" || name == "count") {
    const std::string sub = str_arg(a, 0, "sub", what, "");
    LSERVE_CHECK(arg(a, 0, "sub"), "{} takes a string", what);
    if (name == "count") {
      if (sub.empty()) return Value::integer(static_cast<int64_t>(text::length(s) + 1));
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
      return Value::integer(n);
    }
    const size_t at = name == "find" ? s.find(sub) : s.rfind(sub);
    if (at == std::string::npos) return Value::integer(-1);
    return Value::integer(static_cast<int64_t>(text::length(std::string_view(s).substr(0, at))));
  }
  if (name == "join") {
    const Value* items = arg(a, 0, "iterable");
    LSERVE_CHECK(items, "{} takes one argument", what);
    std::string out;
    bool first = true;
    for (const Value& v : iterate(*items)) {
      LSERVE_CHECK(v.is_string(), "{}: expected strings, found {}", what, type_name(v));
      if (!first) out += s;
      first = false;
      out += v.str();
      in.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (name == "isdigit") return Value::boolean(all_chars(s, [](int c) { return isdigit(c); }));
  if (name == "isalpha") return Value::boolean(all_chars(s, [](int c) { return isalpha(c); }));
  if (name == "isalnum") return Value::boolean(all_chars(s, [](int c) { return isalnum(c); }));
  if (name == "isspace") return Value::boolean(!s.empty() && text::strip(s).empty());
  if (name == "islower") return Value::boolean(s != text::upper(s) && s == text::lower(s));
  if (name == "isupper") return Value::boolean(s != text::lower(s) && s == text::upper(s));
  return std::nullopt;
}

std::optional<Value> dict_method(const Dict& d, const std::string& name, CallArgs& a) {
  if (name == "items" || name == "keys" || name == "values") {
    LSERVE_CHECK(a.positional.empty() && a.keyword.empty(), "dict.{}() takes no arguments", name);
    List out;
    for (const auto& [k, v] : d.entries) {
      if (name == "items") {
        out.push_back(Value::tuple({Value::string(k), v}));
      } else {
        out.push_back(name == "keys" ? Value::string(k) : v);
      }
    }
    return Value::list(std::move(out));
  }
  if (name == "get") {
    const Value* key = arg(a, 0, "key");
    LSERVE_CHECK(key, "dict.get() takes a key");
    const Value* def = arg(a, 1, "default");
    if (key->is_string()) {
      if (const Value* v = d.find(key->str())) return *v;
    }
    return def ? *def : Value::none();
  }
  return std::nullopt;
}

std::optional<Value> list_method(const List& l, const std::string& name, CallArgs& a) {
  if (name == "index" || name == "count") {
    const Value* x = arg(a, 0, "value");
    LSERVE_CHECK(x, "list.{}() takes a value", name);
    int64_t n = 0;
    for (size_t i = 0; i < l.size(); ++i) {
      if (!equals(l[i], *x)) continue;
      if (name == "index") return Value::integer(static_cast<int64_t>(i));
      ++n;
    }
    LSERVE_CHECK(name == "count", "list.index(): {} is not in the list", repr(*x));
    return Value::integer(n);
  }
  if (name == "append" || name == "extend" || name == "pop" || name == "insert" ||
      name == "remove" || name == "sort" || name == "reverse" || name == "clear") {
    fail("list.{}() is not allowed: template values are immutable", name);
  }
  return std::nullopt;
}

}  // namespace

std::optional<Value> call_method(Interp& in, const Value& obj, const std::string& name,
                                 CallArgs& args) {
  if (obj.is_undefined()) fail("{}", obj.undefined_what());
  if (obj.is_string()) return string_method(in, obj.str(), name, args);
  if (obj.is_dict() && !obj.dict().is_namespace) {
    if (obj.dict().find(name) && obj.dict().find(name)->type() == Value::Type::kFunction) {
      return std::nullopt;  // a function stored under that key: the caller calls it
    }
    return dict_method(obj.dict(), name, args);
  }
  if (obj.is_list()) return list_method(obj.items(), name, args);
  return std::nullopt;
}

}  // namespace lserve::jinja
