// generation_config.json defaults (--generation-config auto): parsing, and the precedence
// request (or flag) > generation_config.json > built-in defaults, for the CLI's SamplingParams and
// the server's request parsing.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include <unistd.h>

#include "core/error.h"
#include "engine/generation_config.h"
#include "server/openai_request.h"

namespace lserve {
namespace {

std::string refusal(const std::string& text) {
  try {
    parse_generation_config(text, "/m/generation_config.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << text;
  return {};
}

TEST(GenerationConfig, ParsesTheSamplingFieldsAndIgnoresTheRest) {
  const GenerationConfig g = parse_generation_config(
      R"({"bos_token_id": 2, "eos_token_id": [1, 106], "do_sample": true, "temperature": 0.7,
          "top_p": 0.95, "top_k": 64, "min_p": null, "repetition_penalty": 1.1,
          "max_new_tokens": 128, "transformers_version": "4.50.0"})",
      "generation_config.json");
  EXPECT_FLOAT_EQ(*g.temperature, 0.7f);
  EXPECT_FLOAT_EQ(*g.top_p, 0.95f);
  EXPECT_EQ(*g.top_k, 64);
  EXPECT_FALSE(g.min_p.has_value());  // null counts as absent
  EXPECT_FLOAT_EQ(*g.repetition_penalty, 1.1f);
  EXPECT_EQ(*g.max_new_tokens, 128);
  EXPECT_EQ(g.summary(),
            "temperature=0.7 top_p=0.95 top_k=64 repetition_penalty=1.1 max_new_tokens=128");
  EXPECT_TRUE(parse_generation_config("{}", "g.json").empty());
}

TEST(GenerationConfig, BadValuesNameTheFileAndTheField) {
  const char* file = "/m/generation_config.json";
  struct Case {
    const char* text;
    const char* field;
  };
  for (const Case& c :
       {Case{R"({"temperature": "hot"})", "'temperature'"},
        Case{R"({"temperature": -1})", "'temperature'"}, Case{R"({"top_p": 0})", "'top_p'"},
        Case{R"({"top_p": 1.5})", "'top_p'"}, Case{R"({"top_k": 2.5})", "'top_k'"},
        Case{R"({"top_k": -2})", "'top_k'"}, Case{R"({"min_p": [0.1]})", "'min_p'"},
        Case{R"({"repetition_penalty": 0})", "'repetition_penalty'"},
        Case{R"({"max_new_tokens": 0})", "'max_new_tokens'"},
        Case{R"({"max_new_tokens": 1e30})", "'max_new_tokens'"}}) {
    const std::string why = refusal(c.text);
    EXPECT_NE(why.find(file), std::string::npos) << why;
    EXPECT_NE(why.find(c.field), std::string::npos) << why;
  }
  EXPECT_NE(refusal("{\"temperature\": ").find(file), std::string::npos);
  EXPECT_NE(refusal("[1, 2]").find(file), std::string::npos);
}

TEST(GenerationConfig, FoundOnlyInAModelFolder) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("lserve_gencfg_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  EXPECT_FALSE(find_generation_config(dir.string()).has_value());
  std::ofstream(dir / "generation_config.json") << R"({"temperature": 0.25})";
  const auto g = find_generation_config(dir.string());
  ASSERT_TRUE(g.has_value());
  EXPECT_FLOAT_EQ(*g->temperature, 0.25f);
  EXPECT_EQ(g->source, (dir / "generation_config.json").string());
  // A GGUF file (here: any file) carries no generation config.
  EXPECT_FALSE(find_generation_config((dir / "generation_config.json").string()).has_value());
  std::ofstream(dir / "generation_config.json") << R"({"top_k": "x"})";
  EXPECT_THROW(find_generation_config(dir.string()), Error);
  fs::remove_all(dir);
}

TEST(GenerationConfig, FlagsBeatTheFileWhichBeatsTheBuiltIns) {
  const GenerationConfig g = parse_generation_config(
      R"({"temperature": 0.3, "top_k": -1, "max_new_tokens": 50})", "g.json");
  SamplingParams p;  // built-ins: temperature 0.8, top_k 40, top_p 0.95
  p.temperature = 1.5f;
  g.apply(p, {.temperature = true});  // --temperature 1.5 was given
  EXPECT_FLOAT_EQ(p.temperature, 1.5f);
  EXPECT_EQ(p.top_k, 0);  // -1 (off) in the file
  EXPECT_EQ(p.max_tokens, 50);
  EXPECT_FLOAT_EQ(p.top_p, SamplingParams{}.top_p);  // not in the file: built-in
}

TEST(GenerationConfig, RequestFieldsBeatTheFileWhichBeatsOpenAiDefaults) {
  const GenerationConfig g = parse_generation_config(
      R"({"temperature": 0.3, "top_p": 0.9, "max_new_tokens": 7})", "g.json");
  const nlohmann::json body = {{"prompt", "hi"}, {"top_p", 0.5}};
  const server::GenerationRequest with = server::parse_completion_request(body, &g);
  EXPECT_FLOAT_EQ(with.params.temperature, 0.3f);  // file
  EXPECT_FLOAT_EQ(with.params.top_p, 0.5f);        // request
  EXPECT_EQ(with.params.top_k, 0);                 // OpenAI's default
  EXPECT_FALSE(with.max_tokens.has_value());       // the file's cap is applied with the context
  const server::GenerationRequest without = server::parse_completion_request(body);
  EXPECT_FLOAT_EQ(without.params.temperature, 1.0f);
  const nlohmann::json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                               {"temperature", 0}};
  EXPECT_FLOAT_EQ(server::parse_chat_request(chat, &g).params.temperature, 0.0f);
  EXPECT_FLOAT_EQ(server::parse_chat_request(chat, &g).params.top_p, 0.9f);
}

}  // namespace
}  // namespace lserve
