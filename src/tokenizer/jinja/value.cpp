#include "tokenizer/jinja/value.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "tokenizer/jinja/text.h"

namespace lserve::jinja {

Value Value::undefined(std::string what) {
  return Value(Undefined{std::make_shared<const std::string>(std::move(what))});
}
Value Value::string(std::string s) {
  return Value(std::make_shared<const std::string>(std::move(s)));
}
Value Value::tuple(List items) {
  Value v = list(std::move(items));
  const auto& box = std::get<ListPtr>(v.v_);
  return Value(
      std::make_shared<const ListBox>(ListBox{box->items, box->depth, box->holds_namespace, true}));
}

Value Value::list(List items) {
  int depth = 0;
  bool ns = false;
  for (const Value& v : items) {
    depth = std::max(depth, v.depth());
    ns = ns || v.holds_namespace();
  }
  LSERVE_CHECK(depth < kMaxNesting, "lists and dicts nest deeper than {} levels", kMaxNesting);
  return Value(std::make_shared<const ListBox>(ListBox{std::move(items), depth + 1, ns, false}));
}

int Value::depth() const {
  if (is_list()) return std::get<ListPtr>(v_)->depth;
  if (is_dict()) return dict().depth;
  return 0;
}

bool Value::holds_namespace() const {
  if (is_list()) return std::get<ListPtr>(v_)->holds_namespace;
  if (is_dict()) return dict().is_namespace || dict().holds_namespace;
  return false;
}
Value Value::dict(std::shared_ptr<Dict> d) { return Value(std::move(d)); }
Value Value::function(std::shared_ptr<const Function> f) { return Value(std::move(f)); }

bool Value::is_number() const {
  return type() == Type::kBool || type() == Type::kInt || type() == Type::kFloat;
}

int64_t Value::as_int() const {
  return type() == Type::kBool ? int64_t{std::get<bool>(v_)} : std::get<int64_t>(v_);
}

double Value::as_float() const {
  return type() == Type::kFloat ? std::get<double>(v_) : static_cast<double>(as_int());
}

const std::string& Value::undefined_what() const {
  static const std::string kUnknown = "a value is undefined";
  const auto& what = std::get<Undefined>(v_).what;
  return what ? *what : kUnknown;
}

const Value* Dict::find(std::string_view key) const {
  const auto it = index.find(std::string(key));
  return it == index.end() ? nullptr : &entries[it->second].second;
}

void Dict::set(const std::string& key, Value v) {
  LSERVE_CHECK(v.depth() < kMaxNesting, "lists and dicts nest deeper than {} levels", kMaxNesting);
  LSERVE_CHECK(!is_namespace || !v.holds_namespace(),
               "a namespace cannot hold a namespace (nor a list or dict holding one)");
  depth = std::max(depth, v.depth() + 1);
  holds_namespace = holds_namespace || v.holds_namespace();
  const auto it = index.find(key);
  if (it != index.end()) {
    entries[it->second].second = std::move(v);
    return;
  }
  index.emplace(key, entries.size());
  entries.emplace_back(key, std::move(v));
}

std::shared_ptr<Dict> make_dict() { return std::make_shared<Dict>(); }

bool truthy(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return false;
    case Value::Type::kBool:
    case Value::Type::kInt:
      return v.as_int() != 0;
    case Value::Type::kFloat:
      return v.as_float() != 0.0;
    case Value::Type::kString:
      return !v.str().empty();
    case Value::Type::kList:
      return !v.items().empty();
    case Value::Type::kDict:
      return !v.dict().entries.empty();
    case Value::Type::kFunction:
      return true;
  }
  return false;
}

namespace {

std::string repr_inner(const Value& v, bool top) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return "";
    case Value::Type::kNone:
      return "None";
    case Value::Type::kBool:
      return v.as_bool() ? "True" : "False";
    case Value::Type::kInt:
      return std::to_string(v.as_int());
    case Value::Type::kFloat:
      return text::repr_float(v.as_float());
    case Value::Type::kString:
      return top ? v.str() : text::repr_string(v.str());
    case Value::Type::kList: {
      std::string out = v.is_tuple() ? "(" : "[";
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += ", ";
        out += repr_inner(v.items()[i], false);
      }
      if (v.is_tuple()) return out + (v.items().size() == 1 ? ",)" : ")");
      return out + "]";
    }
    case Value::Type::kDict: {
      if (v.dict().is_namespace) return "<Namespace>";
      std::string out = "{";
      for (size_t i = 0; i < v.dict().entries.size(); ++i) {
        if (i) out += ", ";
        const auto& [k, item] = v.dict().entries[i];
        out += text::repr_string(k) + ": " + repr_inner(item, false);
      }
      return out + "}";
    }
    case Value::Type::kFunction:
      return fmt::format("<function {}>", v.function().name);
  }
  return "";
}

void json_into(const Value& v, int indent, bool sort_keys, int depth, std::string& out) {
  auto newline = [&](int level) {
    if (indent >= 0) {
      out += '\n';
      out.append(static_cast<size_t>(indent * level), ' ');
    }
  };
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.type()) {
    case Value::Type::kUndefined:
      fail("tojson: {}", v.undefined_what());
    case Value::Type::kFunction:
      fail("tojson: a function is not JSON serializable");
    case Value::Type::kNone:
      out += "null";
      return;
    case Value::Type::kBool:
      out += v.as_bool() ? "true" : "false";
      return;
    case Value::Type::kFloat:
      // json.dumps writes floats with repr() except the non-finite ones.
      if (std::isnan(v.as_float())) {
        out += "NaN";
      } else if (std::isinf(v.as_float())) {
        out += v.as_float() < 0 ? "-Infinity" : "Infinity";
      } else {
        out += text::repr_float(v.as_float());
      }
      return;
    case Value::Type::kInt:
      out += std::to_string(v.as_int());
      return;
    case Value::Type::kString:
      out += text::json_string(v.str());
      return;
    case Value::Type::kList: {
      if (v.items().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        json_into(v.items()[i], indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Type::kDict: {
      const auto& entries = v.dict().entries;
      if (entries.empty()) {
        out += "{}";
        return;
      }
      std::vector<size_t> order(entries.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      if (sort_keys) {
        std::sort(order.begin(), order.end(),
                  [&](size_t a, size_t b) { return entries[a].first < entries[b].first; });
      }
      out += '{';
      for (size_t i = 0; i < order.size(); ++i) {
        if (i) out += item_sep;
        newline(depth + 1);
        out += text::json_string(entries[order[i]].first);
        out += ": ";
        json_into(entries[order[i]].second, indent, sort_keys, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
  }
}

}  // namespace

std::string to_str(const Value& v) { return repr_inner(v, true); }
std::string repr(const Value& v) { return repr_inner(v, false); }

std::string type_name(const Value& v) {
  switch (v.type()) {
    case Value::Type::kUndefined:
      return "undefined";
    case Value::Type::kNone:
      return "NoneType object";
    case Value::Type::kBool:
      return "bool object";
    case Value::Type::kInt:
      return "int object";
    case Value::Type::kFloat:
      return "float object";
    case Value::Type::kString:
      return "str object";
    case Value::Type::kList:
      return v.is_tuple() ? "tuple object" : "list object";
    case Value::Type::kDict:
      return v.dict().is_namespace ? "Namespace object" : "dict object";
    case Value::Type::kFunction:
      return "function";
  }
  return "object";
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Value::Type::kFloat || b.type() == Value::Type::kFloat) {
      return a.as_float() == b.as_float();
    }
    return a.as_int() == b.as_int();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Value::Type::kUndefined:
    case Value::Type::kNone:
      return true;
    case Value::Type::kString:
      return a.str() == b.str();
    case Value::Type::kList:
      if (a.is_tuple() != b.is_tuple()) return false;
      return std::equal(a.items().begin(), a.items().end(), b.items().begin(), b.items().end(),
                        equals);
    case Value::Type::kDict: {
      const Dict& da = a.dict();
      const Dict& db = b.dict();
      if (da.entries.size() != db.entries.size()) return false;
      for (const auto& [k, v] : da.entries) {
        const Value* other = db.find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Type::kFunction:
      return &a.function() == &b.function();
    default:
      return false;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.type() == Value::Type::kFloat || b.type() == Value::Type::kFloat) {
      return a.as_float() < b.as_float();
    }
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();  // UTF-8 order is code point order
  if (a.is_list() && b.is_list()) {
    const List& x = a.items();
    const List& y = b.items();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (!equals(x[i], y[i])) return less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined()) {
    fail("{}", a.is_undefined() ? a.undefined_what() : b.undefined_what());
  }
  fail("'<' not supported between a {} and a {}", type_name(a), type_name(b));
}

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  json_into(v, indent, sort_keys, 0, out);
  return out;
}

}  // namespace lserve::jinja
