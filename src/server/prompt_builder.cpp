#include "server/prompt_builder.h"

#include <fmt/format.h>

#include "core/error.h"
#include "server/api_error.h"

namespace lserve::server {
namespace {

// OpenAI's legacy completions default; chat defaults to the rest of the context.
constexpr int kDefaultCompletionTokens = 16;
constexpr const char* kContextLengthExceeded = "context_length_exceeded";

std::vector<int32_t> tokenize_unchecked(const ServerContext& ctx, const GenerationRequest& g,
                                        size_t index) {
  const Tokenizer& tok = ctx.engine.tokenizer();
  if (g.chat) {
    if (!ctx.chat_template) {
      throw bad_request(
          "this model has no chat template lserve knows; use /v1/completions or start the server "
          "with --chat-template");
    }
    return encode_chat(tok, *ctx.chat_template, g.messages, g.add_generation_prompt, {},
                       ChatOptions{g.tools, nullptr, g.continue_final_message});
  }
  const CompletionPrompt& p = g.prompts.at(index);
  if (p.text) return tok.encode(*p.text, /*parse_special=*/true, tok.add_bos());
  return p.ids;
}

// With several prompts, messages say which one ("prompt[2]").
std::string prompt_name(const GenerationRequest& g, size_t index) {
  return !g.chat && g.prompts.size() > 1 ? fmt::format("prompt[{}]", index) : "the prompt";
}

std::string about_prompt(const GenerationRequest& g, size_t index, const std::string& message) {
  return !g.chat && g.prompts.size() > 1 ? fmt::format("prompt[{}]: {}", index, message) : message;
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

std::vector<int32_t> tokenize_prompt(const ServerContext& ctx, const GenerationRequest& g,
                                     size_t index) {
  try {
    return tokenize_unchecked(ctx, g, index);
  } catch (const Error& e) {
    throw bad_request(about_prompt(g, index, e.what()), g.chat ? "messages" : "prompt");
  }
}

namespace {

Request build_engine_request(const ServerContext& ctx, const GenerationRequest& g, size_t index) {
  Request r;
  r.prompt = tokenize_prompt(ctx, g, index);
  r.params = g.params;
  r.sparse = g.sparse;
  const int64_t limit = ctx.engine.max_model_len();
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  // OpenAI names the input field and says context_length_exceeded, whichever part is too long:
  // clients match on the code to shorten the conversation.
  const std::string input = g.chat ? "messages" : "prompt";
  const std::string name = prompt_name(g, index);
  if (prompt == 0) throw bad_request(fmt::format("{} is empty", name), input);
  if (prompt >= limit) {
    throw ApiError(400,
                   fmt::format("This model's maximum context length is {} tokens, but {} "
                               "has {} tokens, leaving no room for a completion",
                               limit, name, prompt),
                   input, kContextLengthExceeded);
  }
  if (g.max_tokens) {
    if (prompt + *g.max_tokens > limit) {
      throw ApiError(
          400,
          fmt::format("This model's maximum context length is {} tokens. However, you requested "
                      "{} tokens ({} in {}, {} for the completion). Please reduce the "
                      "prompt or max_tokens.",
                      limit, prompt + *g.max_tokens, prompt, name, *g.max_tokens),
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
    throw bad_request(about_prompt(g, index, e.what()), param_of(e.what()));
  }
  return r;
}

}  // namespace

std::vector<Request> build_engine_requests(const ServerContext& ctx, const GenerationRequest& g) {
  const size_t count = g.chat ? 1 : g.prompts.size();
  std::vector<Request> requests;
  requests.reserve(count);
  for (size_t i = 0; i < count; ++i) requests.push_back(build_engine_request(ctx, g, i));
  return requests;
}

}  // namespace lserve::server
