// Typed reads of optional fields of a JSON request body. A field that is absent or null gives
// nullopt; a field of the wrong type or out of range is a 400 naming it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lserve::server {

using nlohmann::json;

std::optional<bool> get_bool(const json& body, const char* key);
std::optional<double> get_number(const json& body, const char* key);
// An integer (or an integral float such as 16.0) within [lo, hi].
std::optional<int64_t> get_int(const json& body, const char* key, int64_t lo, int64_t hi);
std::optional<std::string> get_string(const json& body, const char* key);
// A string or an array of strings.
std::optional<std::vector<std::string>> get_strings(const json& body, const char* key);
// An array of integers within [lo, hi].
std::optional<std::vector<int64_t>> get_ints(const json& body, const char* key, int64_t lo,
                                             int64_t hi);
// `v` as an array of integers within [lo, hi]; errors call it `name` (e.g. "prompt[2]") and
// name `param` as the field.
std::vector<int64_t> ints_of(const json& v, const std::string& name, const std::string& param,
                             int64_t lo, int64_t hi);
// An object (for nested options such as stream_options).
const json* get_object(const json& body, const char* key);

}  // namespace lserve::server
