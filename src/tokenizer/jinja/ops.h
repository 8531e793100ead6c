// Python's operators and item access on template values, as jinja2 applies them.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "tokenizer/jinja/template.h"
#include "tokenizer/jinja/value.h"

namespace lserve::jinja {

class Interp;

Value binary_op(std::string_view op, const Value& a, const Value& b, const Limits& limits);
Value unary_op(std::string_view op, const Value& a);
bool contains(const Value& container, const Value& item);

// jinja2's attribute and item lookup: a missing key or index gives an Undefined that remembers
// what was missing; anything asked of an Undefined is an Error.
Value get_attr(const Value& obj, const std::string& name);
Value get_item(const Value& obj, const Value& key);
Value slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

// What `for` walks: a list's items, a dict's keys, a string's characters; nothing for Undefined.
List iterate(const Value& v);

// `obj.name(args)` for the str, dict and list methods templates use; nullopt if `name` is none.
std::optional<Value> call_method(Interp& in, const Value& obj, const std::string& name,
                                 CallArgs& args);

Value apply_filter(Interp& in, const std::string& name, const Value& v, CallArgs& args);
bool apply_test(Interp& in, const std::string& name, const Value& v, CallArgs& args);
bool has_test(const std::string& name);

// The argument at `pos`, or given as `name=`; nullptr when absent.
const Value* arg(const CallArgs& args, size_t pos, std::string_view name);
std::string str_arg(const CallArgs& args, size_t pos, std::string_view name, std::string_view what,
                    std::string fallback);
int64_t int_arg(const CallArgs& args, size_t pos, std::string_view name, std::string_view what,
                int64_t fallback);

}  // namespace lserve::jinja
