// Response bodies and stream chunks of the OpenAI completions and chat completions APIs.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>

#include "engine/logprobs.h"
#include "server/request_channel.h"
#include "tokenizer/tokenizer.h"

namespace lserve::server {

struct ResponseHeader {
  std::string id;  // cmpl-... or chatcmpl-...
  int64_t created = 0;
  std::string model;
  bool chat = false;
};

nlohmann::json usage_json(int prompt_tokens, int completion_tokens);
// lserve's own timing extension, returned as the "lserve" member of final responses/chunks.
nlohmann::json timing_json(const RequestTiming& timing);

// Log-probabilities of `lps` in the endpoint's format: completions (tokens, token_logprobs,
// top_logprobs, text_offset from `text_offset`) or chat ({"content": [...]}).
nlohmann::json logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps, bool chat,
                             int64_t text_offset);

// A whole non-streamed response.
nlohmann::json full_response(const ResponseHeader& h, const std::string& text,
                             const std::string& finish_reason, const nlohmann::json& logprobs,
                             int prompt_tokens, int completion_tokens, const RequestTiming& timing);

// One stream chunk carrying `text` (and the assistant role in the first chat chunk). An empty
// finish_reason is sent as null.
nlohmann::json stream_chunk(const ResponseHeader& h, const std::string& text, bool first,
                            const std::string& finish_reason, const nlohmann::json& logprobs);
// The usage chunk of stream_options.include_usage: no choices.
nlohmann::json usage_chunk(const ResponseHeader& h, int prompt_tokens, int completion_tokens);

}  // namespace lserve::server
