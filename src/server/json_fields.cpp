#include "server/json_fields.h"

#include <fmt/format.h>

#include <cmath>

#include "server/api_error.h"

namespace lserve::server {
namespace {

const json* find(const json& body, const char* key) {
  const auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<int64_t> as_int(const json& v) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      return std::nullopt;
    }
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<bool> get_bool(const json& body, const char* key) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad_request(fmt::format("'{}' must be a boolean", key), key);
  return v->get<bool>();
}

std::optional<double> get_number(const json& body, const char* key) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad_request(fmt::format("'{}' must be a number", key), key);
  const double d = v->get<double>();
  if (!std::isfinite(d)) throw bad_request(fmt::format("'{}' must be finite", key), key);
  return d;
}

std::optional<int64_t> get_int(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  const std::optional<int64_t> i = as_int(*v);
  if (!i) throw bad_request(fmt::format("'{}' must be an integer", key), key);
  if (*i < lo || *i > hi) {
    throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", key, lo, hi, *i), key);
  }
  return i;
}

std::optional<std::string> get_string(const json& body, const char* key) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw bad_request(fmt::format("'{}' must be a string", key), key);
  return v->get<std::string>();
}

std::optional<std::vector<std::string>> get_strings(const json& body, const char* key) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  if (v->is_string()) return std::vector<std::string>{v->get<std::string>()};
  if (!v->is_array()) {
    throw bad_request(fmt::format("'{}' must be a string or an array of strings", key), key);
  }
  std::vector<std::string> out;
  for (const json& e : *v) {
    if (!e.is_string()) {
      throw bad_request(fmt::format("'{}' must be a string or an array of strings", key), key);
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::vector<int64_t> ints_of(const json& v, const std::string& name, const std::string& param,
                             int64_t lo, int64_t hi) {
  if (!v.is_array()) {
    throw bad_request(fmt::format("'{}' must be an array of integers", name), param);
  }
  std::vector<int64_t> out;
  out.reserve(v.size());
  for (const json& e : v) {
    const std::optional<int64_t> i = as_int(e);
    if (!i) throw bad_request(fmt::format("'{}' must be an array of integers", name), param);
    if (*i < lo || *i > hi) {
      throw bad_request(
          fmt::format("'{}' values must be between {} and {}, got {}", name, lo, hi, *i), param);
    }
    out.push_back(*i);
  }
  return out;
}

std::optional<std::vector<int64_t>> get_ints(const json& body, const char* key, int64_t lo,
                                             int64_t hi) {
  const json* v = find(body, key);
  if (!v) return std::nullopt;
  return ints_of(*v, key, key, lo, hi);
}

const json* get_object(const json& body, const char* key) {
  const json* v = find(body, key);
  if (v && !v->is_object()) throw bad_request(fmt::format("'{}' must be an object", key), key);
  return v;
}

}  // namespace lserve::server
