// Hugging Face config.json parsing (config_from_hf_json) without a model: inputs the fuzz target
// fuzz_hf_config found, kept as regression tests of the unit tier.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/model_config.h"

namespace lserve {
namespace {

nlohmann::json llama_config() {
  return {{"model_type", "llama"},    {"num_hidden_layers", 2},   {"hidden_size", 64},
          {"num_attention_heads", 4}, {"intermediate_size", 128}, {"vocab_size", 300},
          {"rope_theta", 500000.0},   {"rms_norm_eps", 1e-5}};
}

std::string refusal(const nlohmann::json& j) {
  try {
    config_from_hf_json(j.dump(), "config.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << j.dump();
  return {};
}

TEST(HfConfig, RopeScalingIsComputedOnlyForAValidHeadDimension) {
  // Found by fuzz_hf_config: the rope factors (head_dim / 2 of them) were computed before the
  // sizes were validated. hidden_size 1707231538 over 5 heads looped over 170M factors (680 MB,
  // a timeout); head_dim 2e9 asked for 4 GB; a negative head_dim threw std::length_error, which
  // is not an lserve::Error. Each is now an Error naming the file and the size at fault.
  const nlohmann::json llama3 = {{"rope_type", "llama3"},
                                 {"factor", 8.0},
                                 {"low_freq_factor", 1.0},
                                 {"high_freq_factor", 4.0},
                                 {"original_max_position_embeddings", 8192}};
  const nlohmann::json linear = {{"type", "linear"}, {"factor", 2.0}};
  nlohmann::json huge = llama_config();
  huge["hidden_size"] = 1707231538;
  huge["num_attention_heads"] = 5;
  huge["rope_scaling"] = llama3;
  nlohmann::json big_head = llama_config();
  big_head["head_dim"] = 2000000000;
  big_head["rope_scaling"] = linear;
  nlohmann::json negative_head = llama_config();
  negative_head["head_dim"] = -4;
  negative_head["rope_scaling"] = linear;
  const std::pair<nlohmann::json, const char*> cases[] = {
      {huge, "hidden size"}, {big_head, "head dimension"}, {negative_head, "head dimension"}};
  for (const auto& [j, field] : cases) {
    const std::string what = refusal(j);
    EXPECT_NE(what.find("config.json"), std::string::npos) << what;
    EXPECT_NE(what.find(field), std::string::npos) << what;
  }

  // Valid sizes still get their scaling.
  nlohmann::json good = llama_config();
  good["rope_scaling"] = llama3;
  EXPECT_EQ(config_from_hf_json(good.dump(), "config.json").rope_freq_factors.size(), 8u);
  good["rope_scaling"] = linear;
  EXPECT_EQ(config_from_hf_json(good.dump(), "config.json").rope_freq_factors,
            std::vector<float>(8, 2.0f));
}

}  // namespace
}  // namespace lserve
