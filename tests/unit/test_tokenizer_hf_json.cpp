// Reading HF tokenizer.json / tokenizer_config.json into a TokenizerSpec.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

using nlohmann::json;

// A Llama-3-shaped tokenizer.json: byte vocabulary + 4 merges (both merge notations), three added
// tokens, an unnamed id (263) and the Split + ByteLevel pre-tokenizer.
json llama3_like() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[std::string(byte_level::encode_byte(b))] = b;
  vocab["Ġh"] = 256;
  vocab["el"] = 257;
  vocab["ell"] = 258;
  vocab["Ġhell"] = 259;
  vocab["<|end|>"] = 264;
  return {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", 260}, {"content", "<|begin_of_text|>"}, {"special", true}},
        {{"id", 261}, {"content", "<|eot_id|>"}, {"special", true}},
        {{"id", 262}, {"content", "<tool>"}, {"special", false}},
        {{"id", 264}, {"content", "<|end|>"}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(pre_regex::kLlama3)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", {"Ġ h", json::array({"e", "l"}), json::array({"el", "l"}), "Ġh ell"}}}},
  };
}

std::string error_of(const json& tok, const std::string& config = "") {
  try {
    Tokenizer t(Tokenizer::spec_from_hf_json(tok.dump(), config));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(TokenizerHfJson, ReadsLlama3StyleFile) {
  const TokenizerSpec spec = Tokenizer::spec_from_hf_json(llama3_like().dump(), "");
  ASSERT_EQ(spec.tokens.size(), 265u);
  EXPECT_EQ(spec.merges, (std::vector<std::string>{"Ġ h", "e l", "el l", "Ġh ell"}));
  EXPECT_EQ(spec.pre_regexes, (std::vector<std::string>{std::string(pre_regex::kLlama3)}));
  EXPECT_TRUE(spec.ignore_merges);
  EXPECT_EQ(spec.token_types[0], kTokenNormal);
  EXPECT_EQ(spec.token_types[260], kTokenControl);
  EXPECT_EQ(spec.token_types[262], kTokenUserDefined);
  EXPECT_EQ(spec.token_types[263], kTokenUnused);  // a hole in the id space
  EXPECT_EQ(spec.token_types[264], kTokenControl);
  // Without tokenizer_config.json, bos comes from the post-processor's template.
  EXPECT_EQ(spec.bos_id, 260);
  EXPECT_TRUE(spec.add_bos);
  EXPECT_EQ(spec.eos_id, -1);

  const Tokenizer tok(spec);
  EXPECT_EQ(tok.encode(" hell<|eot_id|><tool> hello", true, tok.add_bos()),
            (std::vector<int32_t>{260, 259, 261, 262, 259, 'o'}));
  EXPECT_EQ(tok.stop_token_ids(), (std::vector<int32_t>{261}));
}

// `generate --chat` put BOS twice on Llama-3 tokenizers (add_bos, and the template writes
// <|begin_of_text|>): every entry point now encodes chats with encode_chat, which adds BOS only
// where the rendered text lacks it.
TEST(TokenizerHfJson, ChatPromptsCarryExactlyOneBos) {
  const Tokenizer tok(Tokenizer::spec_from_hf_json(llama3_like().dump(), ""));
  ASSERT_TRUE(tok.add_bos());
  const ChatMessage msg{"user", "hello"};
  for (const char* name : {"llama3", "chatml"}) {
    const std::vector<int32_t> ids =
        encode_chat(tok, ChatTemplate::by_name(name), {&msg, 1}, true, " hell");
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), tok.bos_id()) << name;
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 1) << name;
  }
}

TEST(TokenizerHfJson, ReadsTokenizerConfig) {
  const json config = {
      {"add_bos_token", false},
      {"bos_token", {{"content", "<|begin_of_text|>"}, {"lstrip", false}}},
      {"eos_token", "<|eot_id|>"},
      {"pad_token", nullptr},
      {"chat_template", "{{ '<|start_header_id|>' }}"},
  };
  const TokenizerSpec spec = Tokenizer::spec_from_hf_json(llama3_like().dump(), config.dump());
  EXPECT_EQ(spec.bos_id, 260);
  EXPECT_EQ(spec.eos_id, 261);
  EXPECT_EQ(spec.pad_id, -1);
  EXPECT_FALSE(spec.add_bos);
  EXPECT_EQ(spec.chat_template, "{{ '<|start_header_id|>' }}");

  const json named = {{"chat_template",
                       {{{"name", "tool_use"}, {"template", "tools"}},
                        {{"name", "default"}, {"template", "chat"}}}}};
  EXPECT_EQ(Tokenizer::spec_from_hf_json(llama3_like().dump(), named.dump()).chat_template, "chat");
}

TEST(TokenizerHfJson, ByteLevelAndDigitsPreTokenizers) {
  json tok = llama3_like();
  tok["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers",
                           {{{"type", "Digits"}, {"individual_digits", true}},
                            {{"type", "ByteLevel"}, {"add_prefix_space", false}}}}};
  EXPECT_EQ(Tokenizer::spec_from_hf_json(tok.dump(), "").pre_regexes,
            (std::vector<std::string>{std::string(pre_regex::kEachDigit),
                                      std::string(pre_regex::kGpt2)}));
  tok["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}};
  EXPECT_EQ(Tokenizer::spec_from_hf_json(tok.dump(), "").pre_regexes,
            (std::vector<std::string>{std::string(pre_regex::kGpt2)}));
}

TEST(TokenizerHfJson, ErrorsNameTheProblem) {
  EXPECT_NE(error_of(json("x"), "").find("tokenizer.json: top level"), std::string::npos);
  try {
    Tokenizer::spec_from_hf_json("{not json", "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.json: invalid JSON"), std::string::npos);
  }

  json tok = llama3_like();
  tok["model"]["type"] = "Unigram";
  EXPECT_EQ(error_of(tok), "tokenizer.json: model.type 'Unigram' is not supported (only BPE)");

  tok = llama3_like();
  tok["model"].erase("vocab");
  EXPECT_EQ(error_of(tok), "tokenizer.json: model: 'vocab' is missing");

  tok = llama3_like();
  tok["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_NE(error_of(tok).find("type 'Whitespace' is not supported"), std::string::npos);

  tok = llama3_like();
  tok["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  EXPECT_NE(error_of(tok).find("Split behavior 'Removed' is not supported"), std::string::npos);

  tok = llama3_like();
  tok["pre_tokenizer"] = tok["pre_tokenizer"]["pretokenizers"][0];
  EXPECT_NE(error_of(tok).find("no ByteLevel step"), std::string::npos);

  tok = llama3_like();
  tok["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_NE(error_of(tok).find("normalizer 'Lowercase' is not supported"), std::string::npos);

  tok = llama3_like();
  tok["added_tokens"][0]["id"] = 256;
  EXPECT_NE(error_of(tok).find("added token '<|begin_of_text|>' has id 256"), std::string::npos);

  tok = llama3_like();
  tok["model"]["merges"].push_back("Ġhell xyz");
  EXPECT_NE(error_of(tok).find("token 'xyz' is not in the vocabulary"), std::string::npos);

  EXPECT_NE(error_of(llama3_like(), R"({"eos_token": "</s>"})")
                .find("tokenizer_config.json: eos_token '</s>' is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of(llama3_like(), "[1,").find("tokenizer_config.json: invalid JSON"),
            std::string::npos);
  EXPECT_NE(error_of(llama3_like(), R"({"chat_template": [{"name": "rag", "template": "x"}]})")
                .find("no 'default' entry"),
            std::string::npos);
}

// Hostile files: refused before they cost the stack or memory.
TEST(TokenizerHfJson, RefusesDeepNestingAndSparseIds) {
  json tok = llama3_like();
  json nested = tok["pre_tokenizer"];
  for (int i = 0; i < 100; ++i) nested = {{"type", "Sequence"}, {"pretokenizers", {nested}}};
  tok["pre_tokenizer"] = nested;
  EXPECT_NE(error_of(tok).find("nested deeper than 64 levels"), std::string::npos);
  // The same as text, without building it: 200,000 levels of arrays.
  const std::string deep =
      "{\"model\": " + std::string(200000, '[') + std::string(200000, ']') + "}";
  try {
    Tokenizer::spec_from_hf_json(deep, "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64 levels"), std::string::npos);
  }
  tok = llama3_like();
  tok["added_tokens"].push_back({{"id", 2147483646}, {"content", "<|far|>"}, {"special", true}});
  EXPECT_NE(error_of(tok).find("the largest token id 2147483646 is far beyond"), std::string::npos);
}

}  // namespace
}  // namespace lserve
