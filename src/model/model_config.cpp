#include "model/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <type_traits>
#include <variant>

#include "core/error.h"
#include "io/dequant.h"

namespace lserve {
namespace {

bool known_arch(const std::string& a) {
  return a == "llama" || a == "mistral" || a == "qwen2" || a == "gemma3";
}

// Gemma 3's layers: sliding-window layers with every `period`-th one global (6 in every published
// Gemma 3), unless the file lists which layers slide (`{arch}.attention.sliding_window_pattern`:
// one bool per layer, true = sliding, or the period as an integer).
std::vector<int32_t> gemma3_layer_windows(const GgufFile& g, int n_layers, int window) {
  std::vector<int32_t> windows(n_layers, 0);
  if (window <= 0) return windows;
  const std::string key = "gemma3.attention.sliding_window_pattern";
  const GgufValue* v = g.find(key);
  int64_t period = 6;
  if (v != nullptr && v->type == GgufValueType::ARRAY) {
    const auto& items = std::get<std::shared_ptr<GgufArray>>(v->value)->items;
    LSERVE_CHECK(items.size() == static_cast<size_t>(n_layers),
                 "{}: {} has {} entries for {} layers", g.path(), key, items.size(), n_layers);
    for (int l = 0; l < n_layers; ++l) {
      const GgufValue& item = items[l];
      bool sliding = false;
      if (const bool* b = std::get_if<bool>(&item.value)) {
        sliding = *b;
      } else if (const int64_t* i = std::get_if<int64_t>(&item.value)) {
        sliding = *i != 0;
      } else if (const uint64_t* u = std::get_if<uint64_t>(&item.value)) {
        sliding = *u != 0;
      } else {
        fail("{}: {} must hold booleans", g.path(), key);
      }
      windows[l] = sliding ? window : 0;
    }
    return windows;
  }
  if (v != nullptr) period = g.get_int(key);
  LSERVE_CHECK(period >= 1 && period <= n_layers + 1, "{}: {} = {} is out of range", g.path(), key,
               period);
  for (int l = 0; l < n_layers; ++l) windows[l] = l % period == period - 1 ? 0 : window;
  return windows;
}

}  // namespace

void ModelConfig::validate(const std::string& source) const {
  LSERVE_CHECK(known_arch(arch),
               "{}: architecture '{}' is not supported (llama, mistral, qwen2, gemma3)", source,
               arch);
  auto in_range = [&](int v, int lo, int hi, const char* what) {
    LSERVE_CHECK(v >= lo && v <= hi, "{}: {} = {} is out of range [{}, {}]", source, what, v, lo,
                 hi);
  };
  in_range(n_layers, 1, 1024, "number of layers");
  in_range(d_model, 1, 1 << 16, "hidden size");
  in_range(n_heads, 1, 1024, "number of attention heads");
  in_range(n_kv_heads, 1, n_heads, "number of KV heads");
  in_range(head_dim, 2, 1024, "head dimension");
  in_range(d_ff, 1, 1 << 18, "feed-forward size");
  in_range(vocab_size, 1, 1 << 22, "vocabulary size");
  in_range(max_context, 1, 1 << 24, "context length");
  LSERVE_CHECK(n_heads % n_kv_heads == 0,
               "{}: {} attention heads are not a multiple of {} KV heads", source, n_heads,
               n_kv_heads);
  LSERVE_CHECK(head_dim % 2 == 0, "{}: head dimension {} must be even for RoPE", source, head_dim);
  LSERVE_CHECK(rms_eps > 0 && rms_eps < 1, "{}: rms norm epsilon {} is out of range", source,
               rms_eps);
  LSERVE_CHECK(std::isfinite(rope_theta) && rope_theta > 1 && rope_theta < 1e12,
               "{}: rope theta {} is out of range (1, 1e12)", source, rope_theta);
  LSERVE_CHECK(std::isfinite(rope_attention_factor) && rope_attention_factor > 0 &&
                   rope_attention_factor < 10,
               "{}: rope attention factor {} is out of range (0, 10)", source,
               rope_attention_factor);
  LSERVE_CHECK(layer_windows.empty() || layer_windows.size() == static_cast<size_t>(n_layers),
               "{}: {} sliding windows for {} layers", source, layer_windows.size(), n_layers);
  for (int32_t w : layer_windows) {
    LSERVE_CHECK(w >= 0 && w <= (1 << 24), "{}: sliding window {} is out of range", source, w);
  }
  LSERVE_CHECK(std::isfinite(rope_theta_local) && rope_theta_local > 1 && rope_theta_local < 1e12,
               "{}: local rope theta {} is out of range (1, 1e12)", source, rope_theta_local);
  LSERVE_CHECK(std::isfinite(query_pre_attn_scalar) && query_pre_attn_scalar >= 0 &&
                   query_pre_attn_scalar < 1e6,
               "{}: query_pre_attn_scalar {} is out of range", source, query_pre_attn_scalar);
  for (float f : rope_freq_factors) {
    LSERVE_CHECK(std::isfinite(f) && f > 0, "{}: rope frequency factor {} must be positive", source,
                 f);
  }
  LSERVE_CHECK(
      rope_freq_factors.empty() || rope_freq_factors.size() == static_cast<size_t>(head_dim / 2),
      "{}: {} rope frequency factors, expected head_dim/2 = {}", source, rope_freq_factors.size(),
      head_dim / 2);
}

std::string ModelConfig::summary() const {
  int windowed = 0, window = 0;
  for (int32_t w : layer_windows) {
    windowed += w > 0;
    window = std::max(window, w);
  }
  return fmt::format(
      "{} ({}): {} layers{}, d_model {}, {} heads / {} KV heads of dim {}, d_ff {}, vocab {}, "
      "context {}, rope theta {}{}",
      name.empty() ? arch : name, arch, n_layers,
      windowed > 0 ? fmt::format(" ({} with a {}-token sliding window, rope theta {})", windowed,
                                 window, rope_theta_local)
                   : std::string(),
      d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab_size, max_context, rope_theta,
      rope_scaling == "none"
          ? std::string()
          : fmt::format(" ({} scaling{})", rope_scaling,
                        rope_attention_factor != 1.0f
                            ? fmt::format(", attention factor {:.4f}", rope_attention_factor)
                            : std::string()));
}

std::vector<float> llama3_rope_factors(int head_dim, float theta, float factor,
                                       float low_freq_factor, float high_freq_factor,
                                       int original_max_positions) {
  LSERVE_CHECK(factor >= 1 && high_freq_factor > low_freq_factor && original_max_positions > 0,
               "llama3 rope scaling needs factor >= 1, high_freq_factor > low_freq_factor and a "
               "positive original_max_position_embeddings");
  const double low_wavelen = original_max_positions / low_freq_factor;
  const double high_wavelen = original_max_positions / high_freq_factor;
  std::vector<float> out(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * i / head_dim);
    const double wavelen = 2 * M_PI / freq;
    double scaled;
    if (wavelen < high_wavelen) {
      scaled = freq;  // high frequencies keep their resolution
    } else if (wavelen > low_wavelen) {
      scaled = freq / factor;
    } else {
      const double smooth = (original_max_positions / wavelen - low_freq_factor) /
                            (high_freq_factor - low_freq_factor);
      scaled = (1 - smooth) * freq / factor + smooth * freq;
    }
    out[i] = static_cast<float>(freq / scaled);
  }
  return out;
}

std::vector<float> yarn_rope_factors(int head_dim, float theta, float factor,
                                     int original_max_positions, float beta_fast, float beta_slow,
                                     bool truncate) {
  LSERVE_CHECK(factor >= 1 && original_max_positions > 0 && beta_fast > beta_slow && beta_slow > 0,
               "yarn rope scaling needs factor >= 1, a positive original_max_position_embeddings "
               "and beta_fast > beta_slow > 0 (got {}, {}, {}, {})",
               factor, original_max_positions, beta_fast, beta_slow);
  const int half = head_dim / 2;
  // The dimension at which a frequency turns `rotations` times over the original context.
  const auto correction_dim = [&](double rotations) {
    return head_dim * std::log(original_max_positions / (rotations * 2 * M_PI)) /
           (2 * std::log(static_cast<double>(theta)));
  };
  double low = correction_dim(beta_fast), high = correction_dim(beta_slow);
  if (truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(head_dim - 1));
  if (low == high) high += 0.001;
  std::vector<float> out(half);
  for (int i = 0; i < half; ++i) {
    // 1 keeps the frequency (extrapolation), 0 divides it by the factor (interpolation).
    const double keep = 1 - std::clamp((i - low) / (high - low), 0.0, 1.0);
    out[i] = static_cast<float>(1 / ((1 - keep) / factor + keep));
  }
  return out;
}

float yarn_attention_factor(float factor, float mscale, float mscale_all_dim) {
  const auto term = [&](double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1; };
  if (mscale != 0 && mscale_all_dim != 0) {
    return static_cast<float>(term(mscale) / term(mscale_all_dim));
  }
  return static_cast<float>(term(1));
}

std::vector<float> dynamic_ntk_rope_factors(int head_dim, float theta, float factor) {
  LSERVE_CHECK(factor >= 1 && head_dim > 2, "dynamic rope scaling needs factor >= 1");
  const double base = theta * std::pow(static_cast<double>(factor) * factor - factor + 1,
                                       static_cast<double>(head_dim) / (head_dim - 2));
  std::vector<float> out(head_dim / 2);
  // (base / theta)^(2i / d): the new frequency theta'^(-2i/d) as a divisor of the old one.
  for (int i = 0; i < head_dim / 2; ++i) {
    out[i] = static_cast<float>(std::pow(base / theta, 2.0 * i / head_dim));
  }
  return out;
}

ModelConfig config_from_gguf(const GgufFile& g) {
  ModelConfig c;
  c.arch = g.get_string("general.architecture");
  LSERVE_CHECK(known_arch(c.arch),
               "{}: architecture '{}' is not supported (llama, mistral, qwen2, gemma3)", g.path(),
               c.arch);
  const std::string a = c.arch + ".";
  c.name = g.opt_string("general.name").value_or(c.arch);
  // Integer metadata must fit an int: 4294967298 is an error, not 2.
  auto to_int = [&](const std::string& key, int64_t v) {
    LSERVE_CHECK(v >= 0 && v <= std::numeric_limits<int32_t>::max(), "{}: {} = {} is out of range",
                 g.path(), key, v);
    return static_cast<int>(v);
  };
  auto get = [&](const std::string& key) { return to_int(key, g.get_int(a + key)); };
  auto opt = [&](const std::string& key, int fallback) {
    return to_int(key, g.opt_int(a + key).value_or(fallback));
  };
  c.n_layers = get("block_count");
  c.d_model = get("embedding_length");
  c.n_heads = get("attention.head_count");
  c.n_kv_heads = opt("attention.head_count_kv", c.n_heads);
  c.head_dim = c.n_heads > 0 ? opt("attention.key_length", c.d_model / c.n_heads) : 0;
  c.d_ff = get("feed_forward_length");
  c.max_context = get("context_length");
  // Tensors of layers past block_count would be ignored and give a different model.
  for (const auto& t : g.tensors()) {
    if (t.name.rfind("blk.", 0) != 0) continue;
    const int64_t layer = std::strtoll(t.name.c_str() + 4, nullptr, 10);
    LSERVE_CHECK(layer < c.n_layers, "{}: tensor {} is beyond block_count {}", g.path(), t.name,
                 c.n_layers);
  }
  c.rms_eps = static_cast<float>(g.get_float(a + "attention.layer_norm_rms_epsilon"));
  c.rope_theta = static_cast<float>(g.opt_float(a + "rope.freq_base").value_or(10000.0));
  const auto rope_dims = g.opt_int(a + "rope.dimension_count");
  LSERVE_CHECK(!rope_dims || *rope_dims == c.head_dim,
               "{}: partial rotary embeddings (rope.dimension_count {} of head_dim {}) are not "
               "supported",
               g.path(), rope_dims.value_or(0), c.head_dim);
  // llama.cpp's converter permutes Q/K of llama and mistral for adjacent-pair RoPE; qwen2 keeps
  // the Hugging Face layout.
  c.rope_style =
      c.arch == "qwen2" || c.arch == "gemma3" ? RopeStyle::kHalfSplit : RopeStyle::kAdjacentPairs;
  if (c.arch == "gemma3") {
    c.layer_windows = gemma3_layer_windows(g, c.n_layers, opt("attention.sliding_window", 0));
    c.rope_theta_local =
        static_cast<float>(g.opt_float(a + "rope.freq_base_swa").value_or(10000.0));
    // Gemma 3 27B scales queries by (d_model / n_heads)^-1/2, the other sizes by head_dim^-1/2
    // (query_pre_attn_scalar in their configs); GGUF has no key for it.
    c.query_pre_attn_scalar = c.n_layers == 62 && c.d_model == 5376
                                  ? static_cast<float>(c.d_model / c.n_heads)
                                  : static_cast<float>(c.head_dim);
  }
  c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  const auto& embd = g.tensor("token_embd.weight");
  LSERVE_CHECK(embd.dims.size() == 2, "{}: token_embd.weight must be 2-D", g.path());
  c.vocab_size = to_int("vocab_size",
                        g.opt_int(a + "vocab_size").value_or(static_cast<int64_t>(embd.dims[1])));
  if (const auto* f = g.find_tensor("rope_freqs.weight")) {
    LSERVE_CHECK(f->n_elements < (1u << 20), "{}: rope_freqs.weight is too large", g.path());
    c.rope_freq_factors.resize(f->n_elements);
    dequantize(f->type, f->data, c.rope_freq_factors.data(), static_cast<int64_t>(f->n_elements));
    c.rope_scaling = "llama3";
  }
  // Rope scaling in the metadata (llama.cpp's keys); the sizes are validated first, since the
  // factors below take head_dim / 2 entries.
  c.validate(g.path());
  const std::string scaling = g.opt_string(a + "rope.scaling.type").value_or("none");
  const auto opt_float = [&](const std::string& key, double fallback) {
    return static_cast<float>(g.opt_float(a + key).value_or(fallback));
  };
  const float factor = opt_float("rope.scaling.factor", 1.0);
  if (scaling == "linear") {
    LSERVE_CHECK(factor > 0, "{}: rope.scaling.factor {} must be positive", g.path(), factor);
    c.rope_freq_factors.assign(c.head_dim / 2, factor);
    c.rope_scaling = "linear";
  } else if (scaling == "yarn") {
    const int orig =
        to_int("rope.scaling.original_context_length",
               g.opt_int(a + "rope.scaling.original_context_length")
                   .value_or(static_cast<int64_t>(c.max_context / std::max(1.0f, factor))));
    c.rope_freq_factors = yarn_rope_factors(
        c.head_dim, c.rope_theta, factor, orig, opt_float("rope.scaling.yarn_beta_fast", 32.0),
        opt_float("rope.scaling.yarn_beta_slow", 1.0), /*truncate=*/true);
    c.rope_attention_factor =
        yarn_attention_factor(factor, 0, 0) * opt_float("rope.scaling.attn_factor", 1.0);
    c.rope_scaling = "yarn";
  } else if (scaling != "none") {
    fail("{}: rope scaling type '{}' is not supported (linear, yarn; llama3 as rope_freqs)",
         g.path(), scaling);
  }
  c.validate(g.path());
  return c;
}

namespace {

// A config value of exactly the type the field needs: no silent bool -> int, 1.5 -> 1,
// 4294967298 -> 2 or 1e10 -> (undefined) int conversions, and no float that overflows to inf.
template <typename T>
T json_get(const nlohmann::json& j, const char* key, const std::string& source) {
  LSERVE_CHECK(j.contains(key), "{}: '{}' is missing", source, key);
  const nlohmann::json& v = j.at(key);
  auto wrong = [&](const char* want) {
    fail("{}: '{}' must be {}, not {}", source, key, want, v.dump());
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) wrong("true or false");
    return v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    // Integers, or floats with an integral value (32.0), inside T's range.
    double d = 0;
    if (v.is_number_integer()) {
      d = v.is_number_unsigned() ? static_cast<double>(v.get<uint64_t>())
                                 : static_cast<double>(v.get<int64_t>());
    } else if (v.is_number_float() && std::isfinite(v.get<double>()) &&
               std::floor(v.get<double>()) == v.get<double>()) {
      d = v.get<double>();
    } else {
      wrong("an integer");
    }
    if (d < static_cast<double>(std::numeric_limits<T>::min()) ||
        d > static_cast<double>(std::numeric_limits<T>::max())) {
      wrong("an integer in range");
    }
    return static_cast<T>(d);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) wrong("a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::abs(d) > static_cast<double>(std::numeric_limits<T>::max())) {
      wrong("a finite number in range");
    }
    return static_cast<T>(d);
  } else {
    if (!v.is_string()) wrong("a string");
    return v.get<T>();
  }
}

template <typename T>
T json_opt(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return json_get<T>(j, key, source);
}

}  // namespace

ModelConfig config_from_hf_json(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", source, e.what());
  }
  LSERVE_CHECK(j.is_object(), "{}: not a JSON object", source);
  ModelConfig c;
  c.arch = json_get<std::string>(j, "model_type", source);
  // Gemma's norms (x * (1 + w)) and windows are read from GGUF only so far.
  LSERVE_CHECK(c.arch != "gemma3" && c.arch != "gemma3_text",
               "{}: Gemma 3 loads from GGUF files only (a Hugging Face folder is not supported "
               "yet)",
               source);
  c.name = c.arch;
  c.n_layers = json_get<int>(j, "num_hidden_layers", source);
  c.d_model = json_get<int>(j, "hidden_size", source);
  c.n_heads = json_get<int>(j, "num_attention_heads", source);
  c.n_kv_heads = json_opt<int>(j, "num_key_value_heads", c.n_heads, source);
  c.head_dim = json_opt<int>(j, "head_dim", c.n_heads > 0 ? c.d_model / c.n_heads : 0, source);
  c.d_ff = json_get<int>(j, "intermediate_size", source);
  c.vocab_size = json_get<int>(j, "vocab_size", source);
  c.max_context = json_opt<int>(j, "max_position_embeddings", 4096, source);
  c.rms_eps = json_opt<float>(j, "rms_norm_eps", 1e-5f, source);
  c.rope_theta = json_opt<float>(j, "rope_theta", 10000.0f, source);
  c.rope_style = RopeStyle::kHalfSplit;
  c.tied_embeddings = json_opt<bool>(j, "tie_word_embeddings", false, source);
  c.qkv_bias = c.arch == "qwen2" || json_opt<bool>(j, "attention_bias", false, source);
  // The sizes first: the rope scaling below makes head_dim / 2 factors, which for an unchecked
  // head_dim (hidden_size / heads) could be billions, or a negative count.
  c.validate(source);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const auto& rs = j["rope_scaling"];
    std::string type = json_opt<std::string>(rs, "rope_type", "", source);
    if (type.empty()) type = json_opt<std::string>(rs, "type", "", source);
    const float factor = json_opt<float>(rs, "factor", 1.0f, source);
    if (type == "llama3") {
      c.rope_freq_factors = llama3_rope_factors(
          c.head_dim, c.rope_theta, factor, json_opt<float>(rs, "low_freq_factor", 1.0f, source),
          json_opt<float>(rs, "high_freq_factor", 4.0f, source),
          json_opt<int>(rs, "original_max_position_embeddings", 8192, source));
    } else if (type == "linear") {
      LSERVE_CHECK(factor > 0, "{}: rope_scaling factor {} must be positive", source, factor);
      c.rope_freq_factors.assign(c.head_dim / 2, factor);
    } else if (type == "yarn") {
      const int orig =
          json_opt<int>(rs, "original_max_position_embeddings",
                        static_cast<int>(c.max_context / std::max(1.0f, factor)), source);
      c.rope_freq_factors = yarn_rope_factors(c.head_dim, c.rope_theta, factor, orig,
                                              json_opt<float>(rs, "beta_fast", 32.0f, source),
                                              json_opt<float>(rs, "beta_slow", 1.0f, source),
                                              json_opt<bool>(rs, "truncate", true, source));
      const float given = json_opt<float>(rs, "attention_factor", 0.0f, source);
      c.rope_attention_factor =
          given > 0 ? given
                    : yarn_attention_factor(factor, json_opt<float>(rs, "mscale", 0.0f, source),
                                            json_opt<float>(rs, "mscale_all_dim", 0.0f, source));
    } else if (type == "dynamic") {
      c.rope_freq_factors = dynamic_ntk_rope_factors(c.head_dim, c.rope_theta, factor);
    } else if (type != "default" && !type.empty()) {
      fail("{}: rope_scaling type '{}' is not supported (llama3, linear, yarn, dynamic)", source,
           type);
    }
    if (type != "default" && !type.empty()) c.rope_scaling = type;
  }
  c.validate(source);
  return c;
}

}  // namespace lserve
