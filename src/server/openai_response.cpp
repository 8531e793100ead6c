#include "server/openai_response.h"

namespace lserve::server {

using nlohmann::json;

namespace {

json nullable(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json token_bytes_json(const std::string& bytes) {
  json out = json::array();
  for (unsigned char c : bytes) out.push_back(static_cast<int>(c));
  return out;
}

}  // namespace

json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json timing_json(const RequestTiming& t) {
  return {{"time_to_first_token_s", t.time_to_first_token_s},
          {"e2e_s", t.e2e_s},
          {"steps_to_first_token", t.steps_to_first_token}};
}

json logprobs_json(const Tokenizer& tok, std::span<const TokenLogprob> lps, bool chat,
                   int64_t text_offset) {
  if (chat) {
    json content = json::array();
    for (const TokenLogprob& lp : lps) {
      const std::string& bytes = tok.token_bytes(lp.token);
      json top = json::array();
      for (const auto& [id, value] : lp.top) {
        const std::string& b = tok.token_bytes(id);
        top.push_back({{"token", b}, {"logprob", value}, {"bytes", token_bytes_json(b)}});
      }
      content.push_back({{"token", bytes},
                         {"logprob", lp.logprob},
                         {"bytes", token_bytes_json(bytes)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  json tokens = json::array(), values = json::array(), tops = json::array(),
       offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    const std::string& bytes = tok.token_bytes(lp.token);
    tokens.push_back(bytes);
    values.push_back(lp.logprob);
    json top = json::object();
    for (const auto& [id, value] : lp.top) top[tok.token_bytes(id)] = value;
    tops.push_back(std::move(top));
    offsets.push_back(text_offset);
    text_offset += static_cast<int64_t>(bytes.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(values)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

json full_response(const ResponseHeader& h, const std::string& text,
                   const std::string& finish_reason, const json& logprobs, int prompt_tokens,
                   int completion_tokens, const RequestTiming& timing) {
  json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", nullable(finish_reason)}};
  if (h.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({std::move(choice)})},
          {"usage", usage_json(prompt_tokens, completion_tokens)},
          {"lserve", timing_json(timing)}};
}

json stream_chunk(const ResponseHeader& h, const std::string& text, bool first,
                  const std::string& finish_reason, const json& logprobs) {
  json choice = {{"index", 0}, {"logprobs", logprobs}, {"finish_reason", nullable(finish_reason)}};
  if (h.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array({std::move(choice)})}};
}

json usage_chunk(const ResponseHeader& h, int prompt_tokens, int completion_tokens) {
  return {{"id", h.id},
          {"object", h.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array()},
          {"usage", usage_json(prompt_tokens, completion_tokens)}};
}

}  // namespace lserve::server
