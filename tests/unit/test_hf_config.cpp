// Hugging Face config.json parsing (config_from_hf_json) without a model: inputs the fuzz target
// fuzz_hf_config found, kept as regression tests of the unit tier.
#include <gtest/gtest.h>

#include <cmath>
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

// YaRN as Hugging Face transformers computes it (_compute_yarn_parameters), the expected values
// from an independent Python transcription of its formula: Qwen2.5-7B's scaling (head_dim 128,
// theta 1e6, factor 4 over 32,768 positions; ramp over dimensions 23..40 after truncation).
TEST(HfConfig, YarnScalingMatchesTheReferenceFormula) {
  nlohmann::json j = {
      {"model_type", "qwen2"},
      {"num_hidden_layers", 2},
      {"hidden_size", 1024},
      {"num_attention_heads", 8},
      {"num_key_value_heads", 2},
      {"intermediate_size", 128},
      {"vocab_size", 300},
      {"rope_theta", 1000000.0},
      {"max_position_embeddings", 131072},
      {"rope_scaling",
       {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}}}};
  const ModelConfig c = config_from_hf_json(j.dump(), "config.json");
  ASSERT_EQ(c.head_dim, 128);
  ASSERT_EQ(c.rope_freq_factors.size(), 64u);
  const std::pair<int, float> want[] = {{0, 1.0f},       {10, 1.0f}, {20, 1.0f}, {25, 1.096774f},
                                        {30, 1.446809f}, {40, 4.0f}, {63, 4.0f}};
  for (auto [i, f] : want) EXPECT_NEAR(c.rope_freq_factors[i], f, 1e-5) << "frequency " << i;
  EXPECT_NEAR(c.rope_attention_factor, 1.138629f, 1e-6);  // 0.1 ln 4 + 1
  EXPECT_EQ(c.rope_scaling, "yarn");

  // Without truncation the ramp runs over 10.47..22.51 (head_dim 64, theta 1e4, factor 2 / 4096).
  const std::vector<float> f = yarn_rope_factors(64, 10000.0f, 2.0f, 4096, 32, 1, false);
  const std::pair<int, float> untruncated[] = {
      {0, 1.0f}, {10, 1.0f}, {15, 1.231544f}, {20, 1.65462f}, {31, 2.0f}};
  for (auto [i, v] : untruncated) EXPECT_NEAR(f[i], v, 1e-5) << "frequency " << i;

  // An explicit attention_factor wins; a bad one, or betas in the wrong order, are refused.
  j["rope_scaling"]["attention_factor"] = 1.5;
  EXPECT_FLOAT_EQ(config_from_hf_json(j.dump(), "config.json").rope_attention_factor, 1.5f);
  j["rope_scaling"]["attention_factor"] = 1e6;
  EXPECT_NE(refusal(j).find("attention factor"), std::string::npos);
  j["rope_scaling"].erase("attention_factor");
  j["rope_scaling"]["beta_fast"] = 0.5;
  EXPECT_NE(refusal(j).find("beta_fast > beta_slow"), std::string::npos);
}

TEST(HfConfig, DynamicScalingFixesTheBaseForTheLongestContext) {
  nlohmann::json j = llama_config();
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  const ModelConfig c = config_from_hf_json(j.dump(), "config.json");
  ASSERT_EQ(c.rope_freq_factors.size(), 8u);  // head_dim 16
  // theta' = theta * 3^(16/14): frequency i is divided by (theta'/theta)^(2i/16).
  for (int i = 0; i < 8; ++i) {
    EXPECT_NEAR(c.rope_freq_factors[i], std::pow(3.0, 16.0 / 14 * 2 * i / 16), 1e-4);
  }
  j["rope_scaling"] = {{"type", "longrope"}, {"factor", 2.0}};
  EXPECT_NE(refusal(j).find("not supported (llama3, linear, yarn, dynamic)"), std::string::npos);
}

}  // namespace
}  // namespace lserve
