#include "server/prompt_builder.h"

#include <fmt/format.h>

#include "core/error.h"
#include "server/api_error.h"

namespace lserve::server {
namespace {

// OpenAI's legacy completions default; chat defaults to the rest of the context.
constexpr int kDefaultCompletionTokens = 16;
constexpr const char* kContextLengthExceeded = "context_length_exceeded";

std::vector<int32_t> tokenize_unchecked(const ServerContext& ctx, const GenerationRequest& g) {
  const Tokenizer& tok = ctx.engine.tokenizer();
  if (g.chat) {
    if (!ctx.chat_template) {
      throw bad_request(
          "this model has no chat template lserve knows; use /v1/completions or start the server "
          "with --chat-template");
    }
    return encode_chat(tok, *ctx.chat_template, g.messages, g.add_generation_prompt, {},
                       ChatOptions{g.tools, nullptr});
  }
  if (g.prompt_text) return tok.encode(*g.prompt_text, /*parse_special=*/true, tok.add_bos());
  return g.prompt_ids;
}

// Engine messages start with the field they are about ("top_p must be ..."): name it as param.
std::string param_of(const std::string& message) {
  static const char* const kFields[] = {"temperature",
                                        "top_k",
                                        "top_p",
                                        "min_p",
                                        "repetition_penalty",
                                        "max_tokens",
                                        "logprobs",
                                        "stop",
                                        "presence_penalty",
                                        "frequency_penalty",
                                        "logit_bias"};
  for (const char* f : kFields) {
    if (message.rfind(std::string(f) + " ", 0) == 0) return f;
  }
  if (message.rfind("token_budget ", 0) == 0) return "lserve.token_budget";
  if (message.find("stop strings") != std::string::npos) return "stop";
  return "";
}

}  // namespace

std::vector<int32_t> tokenize_prompt(const ServerContext& ctx, const GenerationRequest& g) {
  try {
    return tokenize_unchecked(ctx, g);
  } catch (const Error& e) {
    throw bad_request(e.what(), g.chat ? "messages" : "prompt");
  }
}

Request build_engine_request(const ServerContext& ctx, GenerationRequest& g) {
  Request r;
  r.prompt = tokenize_prompt(ctx, g);
  r.params = std::move(g.params);
  r.sparse = g.sparse;
  const int64_t limit = ctx.engine.max_model_len();
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  // OpenAI names the input field and says context_length_exceeded, whichever part is too long:
  // clients match on the code to shorten the conversation.
  const std::string input = g.chat ? "messages" : "prompt";
  if (prompt == 0) throw bad_request("the prompt is empty", input);
  if (prompt >= limit) {
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens, but the prompt "
                               "has {} tokens, leaving no room for a completion",
                               limit, prompt),
                   input, kContextLengthExceeded);
  }
  if (g.max_tokens) {
    if (prompt + *g.max_tokens > limit) {
      throw ApiError(
          400,
          fmt::format("This model's maximum context length is {} tokens. However, you requested "
                      "{} tokens ({} in the prompt, {} for the completion). Please reduce the "
                      "prompt or max_tokens.",
                      limit, prompt + *g.max_tokens, prompt, *g.max_tokens),
          input, kContextLengthExceeded);
    }
    r.params.max_tokens = *g.max_tokens;
  } else {
    const int64_t room = limit - prompt;
    int64_t cap = g.chat ? room : std::min<int64_t>(room, kDefaultCompletionTokens);
    const auto& gc = ctx.config.generation_config;
    if (gc && gc->max_new_tokens) cap = std::min<int64_t>(room, *gc->max_new_tokens);
    r.params.max_tokens = static_cast<int>(cap);
  }
  try {
    ctx.engine.validate(r);
  } catch (const Error& e) {
    throw bad_request(e.what(), param_of(e.what()));
  }
  return r;
}

}  // namespace lserve::server
