// Turns a parsed OpenAI request into an engine Request: applies the chat template, tokenizes,
// picks max_tokens and checks the whole request against the context length and the engine's
// rules, so that what reaches the engine thread is known to be servable.
#pragma once

#include "engine/request.h"
#include "server/openai_request.h"
#include "server/server_context.h"

namespace lserve::server {

// One Request per prompt (chat: one for the conversation), in order. Every prompt is checked
// before any Request is returned, so a request is refused whole: ApiError 400 naming the problem
// (for the context length: both numbers) and, when there are several prompts, which one.
std::vector<Request> build_engine_requests(const ServerContext& ctx, const GenerationRequest& g);

// Prompt `index`'s token ids (chat: the conversation's) exactly as a generation request would
// see them (for /tokenize).
std::vector<int32_t> tokenize_prompt(const ServerContext& ctx, const GenerationRequest& g,
                                     size_t index = 0);

}  // namespace lserve::server
