// Turns a parsed OpenAI request into an engine Request: applies the chat template, tokenizes,
// picks max_tokens and checks the whole request against the context length and the engine's
// rules, so that what reaches the engine thread is known to be servable.
#pragma once

#include "engine/request.h"
#include "server/openai_request.h"
#include "server/server_context.h"

namespace lserve::server {

// Throws ApiError 400 naming the problem (for the context length: both numbers).
Request build_engine_request(const ServerContext& ctx, GenerationRequest& g);

// The prompt's token ids exactly as a generation request would see them (for /tokenize).
std::vector<int32_t> tokenize_prompt(const ServerContext& ctx, const GenerationRequest& g);

}  // namespace lserve::server
