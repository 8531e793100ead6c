#include "tokenizer/jinja/json_value.h"

#include "core/error.h"

namespace lserve::jinja {
namespace {

Value convert(const nlohmann::json& j, int depth) {
  // Checked on the way down: the limit must hold before the recursion could exhaust the stack.
  LSERVE_CHECK(depth < kMaxNesting, "lists and dicts nest deeper than {} levels", kMaxNesting);
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::integer(static_cast<int64_t>(u));
      return Value::number(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::number(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& item : j) items.push_back(convert(item, depth + 1));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      auto d = make_dict();
      for (const auto& [k, v] : j.items()) d->set(k, convert(v, depth + 1));
      return Value::dict(d);
    }
    case nlohmann::json::value_t::binary:
      break;
  }
  return Value::none();
}

}  // namespace

Value from_json(const nlohmann::json& j) { return convert(j, 0); }

}  // namespace lserve::jinja
