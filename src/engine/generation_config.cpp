#include "engine/generation_config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/mapped_file.h"

namespace lserve {
namespace {

using nlohmann::json;

// The value of `key` as a finite number in [lo, hi], or nothing when absent or null.
std::optional<double> number_field(const json& j, const char* key, double lo, double hi,
                                   const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  LSERVE_CHECK(it->is_number(), "{}: '{}' must be a number, got {}", source, key, it->dump());
  const double v = it->get<double>();
  LSERVE_CHECK(std::isfinite(v) && v >= lo && v <= hi, "{}: '{}' must be in [{}, {}], got {}",
               source, key, lo, hi, it->dump());
  return v;
}

std::optional<int> int_field(const json& j, const char* key, int lo, int hi,
                             const std::string& source) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  LSERVE_CHECK(it->is_number_integer(), "{}: '{}' must be an integer, got {}", source, key,
               it->dump());
  const int64_t v = it->get<int64_t>();
  LSERVE_CHECK(v >= lo && v <= hi, "{}: '{}' must be in [{}, {}], got {}", source, key, lo, hi, v);
  return static_cast<int>(v);
}

std::optional<float> to_float(std::optional<double> v) {
  return v ? std::optional<float>(static_cast<float>(*v)) : std::nullopt;
}

}  // namespace

GenerationConfigMode parse_generation_config_mode(const std::string& name) {
  if (name == "auto") return GenerationConfigMode::kAuto;
  if (name == "vllm") return GenerationConfigMode::kVllm;
  fail("--generation-config '{}' is not auto or vllm", name);
}

bool GenerationConfig::empty() const {
  return !temperature && !top_p && !top_k && !min_p && !repetition_penalty && !max_new_tokens;
}

void GenerationConfig::apply(SamplingParams& p, const ExplicitSamplingFields& keep) const {
  if (temperature && !keep.temperature) p.temperature = *temperature;
  if (top_p && !keep.top_p) p.top_p = *top_p;
  if (top_k && !keep.top_k) p.top_k = *top_k < 0 ? 0 : *top_k;
  if (min_p && !keep.min_p) p.min_p = *min_p;
  if (repetition_penalty && !keep.repetition_penalty) p.repetition_penalty = *repetition_penalty;
  if (max_new_tokens && !keep.max_tokens) p.max_tokens = *max_new_tokens;
}

std::string GenerationConfig::summary() const {
  std::string s;
  auto add = [&](const char* name, auto v) {
    if (v) s += fmt::format("{}{}={}", s.empty() ? "" : " ", name, *v);
  };
  add("temperature", temperature);
  add("top_p", top_p);
  add("top_k", top_k);
  add("min_p", min_p);
  add("repetition_penalty", repetition_penalty);
  add("max_new_tokens", max_new_tokens);
  return s.empty() ? "nothing" : s;
}

GenerationConfig parse_generation_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", source, e.what());
  }
  LSERVE_CHECK(j.is_object(), "{}: expected a JSON object", source);
  // The same ranges SamplingParams::validate accepts, so a file that parses also samples.
  GenerationConfig g;
  g.source = source;
  g.temperature = to_float(number_field(j, "temperature", 0, 100, source));
  g.top_p = to_float(number_field(j, "top_p", 0, 1, source));
  LSERVE_CHECK(!g.top_p || *g.top_p > 0, "{}: 'top_p' must be in (0, 1], got 0", source);
  g.top_k = int_field(j, "top_k", -1, std::numeric_limits<int>::max(), source);
  g.min_p = to_float(number_field(j, "min_p", 0, 1, source));
  g.repetition_penalty = to_float(number_field(j, "repetition_penalty", 0, 10, source));
  LSERVE_CHECK(!g.repetition_penalty || *g.repetition_penalty > 0,
               "{}: 'repetition_penalty' must be in (0, 10], got 0", source);
  g.max_new_tokens = int_field(j, "max_new_tokens", 1, std::numeric_limits<int>::max(), source);
  return g;
}

std::optional<GenerationConfig> find_generation_config(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_path, ec)) return std::nullopt;
  const fs::path file = fs::path(model_path) / "generation_config.json";
  if (!fs::is_regular_file(file, ec)) return std::nullopt;
  return parse_generation_config(read_text_file(file.string()), file.string());
}

}  // namespace lserve
