// Parsing of /v1/completions and /v1/chat/completions bodies into what the engine needs. Only
// the shape and types are checked here (400 naming the field); value ranges are checked by
// SamplingParams/Engine::validate, and the context length once the prompt is tokenized.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/generation_config.h"
#include "engine/request.h"
#include "tokenizer/chat_template.h"

namespace lserve::server {

// At most this many choices per request, over all its prompts (prompts x n): each choice is a
// sequence of its own.
constexpr int64_t kMaxChoices = 16;

// One prompt of a completions request: text, or token ids.
struct CompletionPrompt {
  std::optional<std::string> text;
  std::vector<int32_t> ids;  // when `text` is unset
};

struct GenerationRequest {
  bool chat = false;
  std::string model;  // empty: the served model
  // Completions: one or more prompts ('prompt' as a string, strings, token ids or arrays of
  // them), each sampled n times; choice index = prompt index * n + choice.
  std::vector<CompletionPrompt> prompts;
  bool echo = false;  // completions: each choice's text starts with its prompt
  // Chat: the conversation.
  std::vector<ChatMessage> messages;
  bool add_generation_prompt = true;
  // Chat (vLLM's extension): the prompt ends inside the final (assistant) message, which the
  // model continues. Needs add_generation_prompt false.
  bool continue_final_message = false;
  // Chat: the request's tool definitions, for the template to render (null: none). Tool calls
  // the model writes come back as text; lserve parses none.
  nlohmann::json tools;

  SamplingParams params;
  std::optional<int> max_tokens;  // unset: the endpoint's default
  int n = 1;  // choices per prompt: independent samples (seeds seed, seed + 1, ...)
  bool stream = false;
  bool include_usage = false;
  SparseOverride sparse;
};

// Throw ApiError (400) with the offending field's name. Sampling fields the body leaves unset
// come from `defaults` (the model's generation_config.json) when given, else OpenAI's defaults.
GenerationRequest parse_completion_request(const nlohmann::json& body,
                                           const GenerationConfig* defaults = nullptr);
GenerationRequest parse_chat_request(const nlohmann::json& body,
                                     const GenerationConfig* defaults = nullptr);

// vLLM's /detokenize: {"model"?, "tokens": [ids]}.
struct DetokenizeRequest {
  std::string model;  // empty: the served model
  std::vector<int32_t> tokens;
};
// 400 naming "tokens" unless it is an array of ids in [0, vocab_size).
DetokenizeRequest parse_detokenize_request(const nlohmann::json& body, int32_t vocab_size);

// Parses request text as JSON; ApiError 400 saying where it is malformed.
// Request bodies nest at most this deep and hold at most this many JSON values (a prompt of 4M
// token ids fits); beyond either the body is refused with 400 while it is being parsed.
constexpr int kMaxJsonDepth = 64;
constexpr int64_t kMaxJsonValues = int64_t{4} << 20;
nlohmann::json parse_body(const std::string& text);

}  // namespace lserve::server
