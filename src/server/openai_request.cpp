#include "server/openai_request.h"

#include <fmt/format.h>

#include <charconv>
#include <limits>

#include "server/api_error.h"
#include "server/json_fields.h"

namespace lserve::server {
namespace {

constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();

// Fields both endpoints share: sampling, streaming, vLLM's extensions and lserve's own.
void parse_common(const json& b, const GenerationConfig* defaults, GenerationRequest& r) {
  if (auto m = get_string(b, "model")) r.model = *m;
  SamplingParams& p = r.params;
  // OpenAI's defaults, not the CLI's: a client that sends nothing gets plain sampling.
  p.temperature = 1.0f;
  p.top_p = 1.0f;
  p.top_k = 0;
  p.min_p = 0.0f;
  // The model's generation_config.json sits between those and the request's own values; its
  // max_new_tokens is applied with the context length (build_engine_request).
  if (defaults) defaults->apply(p, {.max_tokens = true});
  if (auto v = get_number(b, "temperature")) p.temperature = static_cast<float>(*v);
  if (auto v = get_number(b, "top_p")) p.top_p = static_cast<float>(*v);
  if (auto v = get_int(b, "top_k", -1, kIntMax)) p.top_k = *v < 0 ? 0 : static_cast<int>(*v);
  if (auto v = get_number(b, "min_p")) p.min_p = static_cast<float>(*v);
  if (auto v = get_number(b, "repetition_penalty")) p.repetition_penalty = static_cast<float>(*v);
  if (auto v = get_number(b, "presence_penalty")) p.presence_penalty = static_cast<float>(*v);
  if (auto v = get_number(b, "frequency_penalty")) p.frequency_penalty = static_cast<float>(*v);
  if (auto v = get_int(b, "seed", std::numeric_limits<int64_t>::min(),
                       std::numeric_limits<int64_t>::max())) {
    p.seed = static_cast<uint64_t>(*v);
  }
  if (auto v = get_strings(b, "stop")) p.stop = *v;
  if (auto v = get_ints(b, "stop_token_ids", 0, kIntMax)) {
    p.stop_token_ids.assign(v->begin(), v->end());
  }
  if (auto v = get_bool(b, "ignore_eos")) p.ignore_eos = *v;
  if (auto v = get_int(b, "n", 1, kMaxChoices)) r.n = static_cast<int>(*v);
  if (const json* lb = get_object(b, "logit_bias")) {
    // {"<token id>": bias, ...}, as OpenAI's API: keys are token ids written as strings.
    for (const auto& [key, value] : lb->items()) {
      int64_t id = -1;
      const auto* end = key.data() + key.size();
      const auto [ptr, ec] = std::from_chars(key.data(), end, id);
      if (key.empty() || ec != std::errc() || ptr != end || id < 0 || id > kIntMax) {
        throw bad_request(
            fmt::format("'logit_bias' keys must be token ids (non-negative integers), got '{}'",
                        key),
            "logit_bias");
      }
      if (!value.is_number()) {
        throw bad_request(fmt::format("'logit_bias' value for token {} must be a number", id),
                          "logit_bias");
      }
      p.logit_bias.emplace_back(static_cast<int32_t>(id), value.get<float>());
    }
  }

  if (auto v = get_bool(b, "stream")) r.stream = *v;
  if (const json* so = get_object(b, "stream_options")) {
    if (!r.stream) {
      throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    }
    if (auto v = get_bool(*so, "include_usage")) r.include_usage = *v;
  }

  if (const json* ext = get_object(b, "lserve")) {
    for (const auto& [key, value] : ext->items()) {
      if (key != "dense" && key != "token_budget") {
        throw bad_request(
            fmt::format("unknown field 'lserve.{}' (known: dense, token_budget)", key), "lserve");
      }
    }
    if (auto v = get_bool(*ext, "dense")) r.sparse.dense = *v;
    if (auto v = get_int(*ext, "token_budget", 0, kIntMax)) {
      r.sparse.token_budget = static_cast<int>(*v);
    }
  }
}

std::vector<int32_t> to_ids(const std::vector<int64_t>& v) {
  return std::vector<int32_t>(v.begin(), v.end());
}

const char* json_kind(const json& v) {
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_number()) return "a number";
  if (v.is_object()) return "an object";
  if (v.is_boolean()) return "a boolean";
  return "null";
}

// As OpenAI and vLLM take it: a string, an array of strings, an array of token ids (one prompt),
// or an array of arrays of token ids.
void parse_prompt(const json& b, GenerationRequest& r) {
  const auto it = b.find("prompt");
  if (it == b.end() || it->is_null()) throw bad_request("'prompt' is required", "prompt");
  const json& p = *it;
  const char* shape =
      "'prompt' must be a string, an array of strings, an array of token ids, or an array of "
      "arrays of token ids";
  if (p.is_string()) {
    r.prompts.push_back({p.get<std::string>(), {}});
    return;
  }
  if (!p.is_array()) throw bad_request(shape, "prompt");
  if (p.empty()) {
    throw bad_request("'prompt' is an empty array: give at least one prompt", "prompt");
  }
  const json& first = p[0];
  if (first.is_number()) {
    // One prompt of token ids; any element that is not one is named by ints_of.
    r.prompts.push_back({std::nullopt, to_ids(ints_of(p, "prompt", "prompt", 0, kIntMax))});
    return;
  }
  if (!first.is_string() && !first.is_array()) throw bad_request(shape, "prompt");
  for (size_t i = 0; i < p.size(); ++i) {
    const json& e = p[i];
    if (e.is_string() != first.is_string() || e.is_array() != first.is_array()) {
      throw bad_request(
          fmt::format("'prompt' mixes types: prompt[0] is {} but prompt[{}] is {}; an array of "
                      "prompts must hold only strings or only arrays of token ids",
                      json_kind(first), i, json_kind(e)),
          "prompt");
    }
    if (e.is_string()) {
      r.prompts.push_back({e.get<std::string>(), {}});
    } else {
      const std::string name = fmt::format("prompt[{}]", i);
      r.prompts.push_back({std::nullopt, to_ids(ints_of(e, name, "prompt", 0, kIntMax))});
    }
  }
}

std::string message_content(const json& m, size_t index) {
  const auto it = m.find("content");
  if (it == m.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  const std::string param = fmt::format("messages[{}].content", index);
  if (!it->is_array()) throw bad_request("message content must be a string or an array", param);
  std::string text;
  for (const json& part : *it) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      throw bad_request(
          "only text content parts ({\"type\": \"text\", \"text\": ...}) are "
          "supported",
          param);
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

// The keys a chat template may use beyond role and content, passed to it as given. A null
// content stays null: templates tell an assistant turn that only calls tools by it.
json message_extra(const json& m, const std::string& param) {
  json extra = json::object();
  if (const auto c = m.find("content"); c != m.end() && c->is_null()) extra["content"] = nullptr;
  if (const auto tc = m.find("tool_calls"); tc != m.end() && !tc->is_null()) {
    if (!tc->is_array()) throw bad_request("'tool_calls' must be an array", param + ".tool_calls");
    extra["tool_calls"] = *tc;
  }
  for (const char* key : {"name", "tool_call_id"}) {
    const auto it = m.find(key);
    if (it == m.end() || it->is_null()) continue;
    if (!it->is_string()) {
      throw bad_request(fmt::format("'{}' must be a string", key), param + "." + key);
    }
    extra[key] = *it;
  }
  return extra.empty() ? json() : extra;
}

void parse_messages(const json& b, GenerationRequest& r) {
  const auto it = b.find("messages");
  if (it == b.end() || !it->is_array() || it->empty()) {
    throw bad_request("'messages' must be a non-empty array", "messages");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw bad_request("each message must be an object", param);
    const auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      throw bad_request("each message needs a string 'role'", param + ".role");
    }
    std::string name = role->get<std::string>();
    if (name == "developer") name = "system";  // OpenAI's newer name for the system role
    if (name != "system" && name != "user" && name != "assistant" && name != "tool") {
      throw bad_request(
          fmt::format("unsupported role '{}' (system, developer, user, assistant, tool)", name),
          param + ".role");
    }
    r.messages.push_back({name, message_content(m, i), message_extra(m, param)});
  }
}

void reject_unsupported(const json& b, bool chat) {
  for (const char* key : {"tools", "functions", "suffix"}) {
    if (chat && std::string_view(key) == "tools") continue;  // the chat template renders them
    const auto it = b.find(key);
    if (it != b.end() && !it->is_null() && !(it->is_array() && it->empty()) &&
        !(it->is_string() && it->get<std::string>().empty())) {
      throw bad_request(fmt::format("'{}' is not supported", key), key);
    }
  }
  if (auto v = get_bool(b, "echo"); v && *v && chat) {
    throw bad_request("'echo' is only supported on /v1/completions", "echo");
  }
  if (auto v = get_int(b, "best_of", 1, kIntMax); v && *v != 1) {
    throw bad_request("'best_of' is not supported (it must be 1)", "best_of");
  }
  if (const json* rf = get_object(b, "response_format")) {
    if (rf->value("type", "text") != "text") {
      throw bad_request("only response_format {\"type\": \"text\"} is supported",
                        "response_format");
    }
  }
}

void require_object(const json& b) {
  if (!b.is_object()) throw bad_request("the request body must be a JSON object");
}

}  // namespace

json parse_body(const std::string& text) {
  // Limits checked while parsing, so a hostile body is refused before it is built: a 16 MiB body
  // of '[' otherwise becomes millions of nested arrays (a gigabyte of memory to reject).
  int64_t values = 0;
  auto limits = [&](int depth, json::parse_event_t event, json&) {
    if (depth > kMaxJsonDepth) {
      throw bad_request(fmt::format("the JSON body nests deeper than {} levels", kMaxJsonDepth));
    }
    if (event == json::parse_event_t::value && ++values > kMaxJsonValues) {
      throw bad_request(fmt::format("the JSON body has more than {} values", kMaxJsonValues));
    }
    return true;
  };
  try {
    return json::parse(text, limits);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for numbers beyond a double (1e400).
    throw bad_request(fmt::format("invalid JSON: {}", e.what()));
  }
}

namespace {

// A field of an unexpected JSON type deep inside the body (a content part's "type": 5, a
// "response_format" of {"type": null}) is the client's mistake: 400 with the parser's words,
// never 500.
template <class Fn>
GenerationRequest client_errors_are_400(Fn&& parse) {
  try {
    return parse();
  } catch (const json::exception& e) {
    throw bad_request(fmt::format("invalid request: {}", e.what()));
  }
}

GenerationRequest parse_completion(const json& b, const GenerationConfig* defaults) {
  require_object(b);
  reject_unsupported(b, false);
  GenerationRequest r;
  parse_prompt(b, r);
  parse_common(b, defaults, r);
  const auto choices = static_cast<int64_t>(r.prompts.size()) * r.n;
  if (choices > kMaxChoices) {
    throw bad_request(fmt::format("{} prompts with n = {} make {} choices; a request may have at "
                                  "most {} (prompts x n)",
                                  r.prompts.size(), r.n, choices, kMaxChoices),
                      "prompt");
  }
  if (auto v = get_int(b, "max_tokens", 1, kIntMax)) r.max_tokens = static_cast<int>(*v);
  if (auto v = get_int(b, "logprobs", 0, SamplingParams::kMaxLogprobs)) {
    r.params.logprobs = static_cast<int>(*v);
  }
  if (auto v = get_bool(b, "echo")) r.echo = *v;
  if (r.echo && r.params.logprobs >= 0) {
    // vLLM then returns the prompt tokens' log-probabilities too, which lserve's prefill does
    // not compute.
    throw bad_request(
        "'echo' with 'logprobs' is not supported: lserve does not compute the prompt tokens' "
        "log-probabilities",
        "echo");
  }
  return r;
}

GenerationRequest parse_chat(const json& b, const GenerationConfig* defaults) {
  require_object(b);
  reject_unsupported(b, true);
  if (const auto tc = b.find("tool_choice");
      tc != b.end() && !tc->is_null() && *tc != json("none") && *tc != json("auto")) {
    throw bad_request("'tool_choice' is not supported", "tool_choice");
  }
  GenerationRequest r;
  r.chat = true;
  parse_messages(b, r);
  if (const auto tools = b.find("tools"); tools != b.end() && !tools->is_null()) {
    if (!tools->is_array()) throw bad_request("'tools' must be an array", "tools");
    for (const json& t : *tools) {
      if (!t.is_object()) throw bad_request("each tool must be an object", "tools");
    }
    if (!tools->empty()) r.tools = *tools;
  }
  parse_common(b, defaults, r);
  if (auto v = get_bool(b, "add_generation_prompt")) r.add_generation_prompt = *v;
  if (auto v = get_bool(b, "continue_final_message")) r.continue_final_message = *v;
  if (r.continue_final_message) {
    if (r.add_generation_prompt) {
      throw bad_request(
          "'continue_final_message' and 'add_generation_prompt' cannot both be true (set "
          "'add_generation_prompt' to false to continue the final message)",
          "continue_final_message");
    }
    if (r.messages.back().role != "assistant") {
      throw bad_request(
          fmt::format("'continue_final_message' needs the last message to be from the assistant, "
                      "not '{}'",
                      r.messages.back().role),
          "continue_final_message");
    }
  }
  if (auto v = get_int(b, "max_completion_tokens", 1, kIntMax)) r.max_tokens = static_cast<int>(*v);
  if (auto v = get_int(b, "max_tokens", 1, kIntMax)) r.max_tokens = static_cast<int>(*v);
  const bool logprobs = get_bool(b, "logprobs").value_or(false);
  const auto top = get_int(b, "top_logprobs", 0, SamplingParams::kMaxLogprobs);
  if (top && !logprobs) {
    throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  }
  if (logprobs) r.params.logprobs = static_cast<int>(top.value_or(0));
  return r;
}

}  // namespace

GenerationRequest parse_completion_request(const json& b, const GenerationConfig* defaults) {
  return client_errors_are_400([&] { return parse_completion(b, defaults); });
}

GenerationRequest parse_chat_request(const json& b, const GenerationConfig* defaults) {
  return client_errors_are_400([&] { return parse_chat(b, defaults); });
}

DetokenizeRequest parse_detokenize_request(const json& b, int32_t vocab_size) {
  require_object(b);
  DetokenizeRequest r;
  if (auto m = get_string(b, "model")) r.model = *m;
  const auto tokens = get_ints(b, "tokens", 0, int64_t{vocab_size} - 1);
  if (!tokens) throw bad_request("'tokens' (an array of token ids) is required", "tokens");
  r.tokens = to_ids(*tokens);
  return r;
}

}  // namespace lserve::server
