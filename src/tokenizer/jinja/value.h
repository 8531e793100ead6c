// Values of the Jinja interpreter, with Python's semantics where templates can observe them
// (printing, truthiness, equality, ordering, JSON), since chat templates are written against
// jinja2 running on Python.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace lserve::jinja {

class Value;
using List = std::vector<Value>;

struct Dict;
struct Function;

// jinja2's default Undefined: prints empty and is falsy; using it further (attribute, arithmetic,
// call) is an error that says what was missing.
struct Undefined {
  std::shared_ptr<const std::string> what;  // e.g. "'foo' is undefined"
};

class Value {
 public:
  enum class Type { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() : v_(Undefined{}) {}
  static Value undefined(std::string what);
  static Value none() { return Value(nullptr); }
  static Value boolean(bool b) { return Value(b); }
  static Value integer(int64_t i) { return Value(i); }
  static Value number(double d) { return Value(d); }
  static Value string(std::string s);
  static Value list(List items);
  static Value tuple(List items);  // a list that prints as Python's tuple
  static Value dict(std::shared_ptr<Dict> d);
  static Value function(std::shared_ptr<const Function> f);

  Type type() const { return static_cast<Type>(v_.index()); }
  bool is_undefined() const { return type() == Type::kUndefined; }
  bool is_none() const { return type() == Type::kNone; }
  bool is_string() const { return type() == Type::kString; }
  bool is_list() const { return type() == Type::kList; }  // tuples too
  bool is_tuple() const { return is_list() && std::get<ListPtr>(v_)->tuple; }
  bool is_dict() const { return type() == Type::kDict; }
  // int or float (bool too, as in Python, where bool is an int).
  bool is_number() const;

  bool as_bool() const { return std::get<bool>(v_); }
  int64_t as_int() const;   // bool or int
  double as_float() const;  // bool, int or float
  const std::string& str() const { return *std::get<StrPtr>(v_); }
  const List& items() const { return std::get<ListPtr>(v_)->items; }
  Dict& dict() const { return *std::get<DictPtr>(v_); }
  const std::shared_ptr<Dict>& dict_ptr() const { return std::get<DictPtr>(v_); }
  const Function& function() const { return *std::get<FuncPtr>(v_); }
  const std::string& undefined_what() const;
  // How deep lists and dicts nest inside this value (0 for a scalar), and whether a namespace is
  // among them: kept so that no template can build a value deep enough to exhaust the stack when
  // printed, or a namespace that contains itself.
  int depth() const;
  bool holds_namespace() const;

 private:
  using StrPtr = std::shared_ptr<const std::string>;
  struct ListBox {
    List items;
    int depth;
    bool holds_namespace;
    bool tuple;
  };
  using ListPtr = std::shared_ptr<const ListBox>;
  using DictPtr = std::shared_ptr<Dict>;
  using FuncPtr = std::shared_ptr<const Function>;
  template <class T>
  explicit Value(T v) : v_(std::move(v)) {}

  std::variant<Undefined, std::nullptr_t, bool, int64_t, double, StrPtr, ListPtr, DictPtr, FuncPtr>
      v_;
};

// Insertion-ordered, string keys only (what chat data and templates use). Shared by reference,
// so that a namespace() changed in a loop is seen outside it, as in Python.
struct Dict {
  std::vector<std::pair<std::string, Value>> entries;
  std::unordered_map<std::string, size_t> index;
  bool is_namespace = false;  // `{% set ns.x = ... %}` is allowed only on namespace()
  int depth = 1;
  bool holds_namespace = false;

  const Value* find(std::string_view key) const;
  void set(const std::string& key, Value v);
};

// Lists and dicts nest at most this deep; deeper is an Error.
constexpr int kMaxNesting = 256;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

struct Function {
  std::string name;
  std::function<Value(CallArgs&)> call;
};

std::shared_ptr<Dict> make_dict();

bool truthy(const Value& v);
// Python's str() and repr().
std::string to_str(const Value& v);
std::string repr(const Value& v);
// "str object", "dict object": jinja2's words in error messages.
std::string type_name(const Value& v);
// Python ==; never fails.
bool equals(const Value& a, const Value& b);
// Python <; Error for values Python cannot order (a string and a number, a dict, ...).
bool less(const Value& a, const Value& b);

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys) as Hugging Face's tojson
// calls it; indent < 0 is None (one line, ", " and ": " separators). Error on undefined or a
// function, as json.dumps fails on them.
std::string to_json(const Value& v, int indent = -1, bool sort_keys = false);

}  // namespace lserve::jinja
