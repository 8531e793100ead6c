// libFuzzer target: a chat template (untrusted: it comes with the model) parsed and rendered by
// lserve's Jinja interpreter. Input: the template source, optionally followed by NUL and a JSON
// array of messages (untrusted too: they come with requests); without it, two fixed
// conversations.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "tokenizer/jinja/json_value.h"
#include "tokenizer/jinja/template.h"

namespace lserve {
namespace {

// Two conversations: one every template accepts (string content, roles alternating), so that the
// fuzzer reaches deep into the seeds, and one with what only some accept (content parts, a tool
// call with null content, a tool result).
const nlohmann::json& plain_messages() {
  static const nlohmann::json messages = nlohmann::json::parse(R"([
    {"role": "user", "content": "Hi! caf\u00e9 \ud83d\ude00"},
    {"role": "assistant", "content": "<think>ok</think> Hello."},
    {"role": "user", "content": "  Weather in Paris?  "}
  ])");
  return messages;
}

const nlohmann::json& rich_messages() {
  static const nlohmann::json messages = nlohmann::json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Weather in "},
                                 {"type": "text", "text": "Paris?"}]},
    {"role": "assistant", "content": null, "tool_calls": [{"id": "call12345", "type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21.5}", "tool_call_id": "call12345"},
    {"role": "user", "content": "Thanks!"}
  ])");
  return messages;
}

const nlohmann::json& default_tools() {
  static const nlohmann::json tools = nlohmann::json::parse(R"([
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]}}}
  ])");
  return tools;
}

jinja::Value raise_exception(jinja::CallArgs& a) {
  throw jinja::RaisedError(a.positional.empty() ? "" : jinja::to_str(a.positional[0]));
}

}  // namespace
}  // namespace lserve

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lserve;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  std::vector<nlohmann::json> conversations = {plain_messages(), rich_messages()};
  if (nul != std::string_view::npos) {
    const auto given =
        nlohmann::json::parse(input.substr(nul + 1), nullptr, /*allow_exceptions=*/false);
    if (given.is_discarded()) return 0;
    conversations = {given};
  }
  // Smaller than the defaults, so that each input runs in milliseconds; the checks are the same.
  jinja::Limits limits;
  limits.max_loop_iterations = 20000;
  limits.max_output_bytes = 1 << 20;
  limits.max_call_depth = 32;
  std::optional<jinja::Template> tmpl;
  if (!fuzz::refusals_are_errors([&] { tmpl.emplace(source); })) return 0;
  for (const nlohmann::json& messages : conversations) {
    fuzz::refusals_are_errors([&] {
      jinja::Dict vars;
      vars.set("messages", jinja::from_json(messages));
      vars.set("tools", jinja::from_json(default_tools()));
      vars.set("bos_token", jinja::Value::string("<s>"));
      vars.set("eos_token", jinja::Value::string("</s>"));
      vars.set("raise_exception", jinja::Value::function(std::make_shared<const jinja::Function>(
                                      jinja::Function{"raise_exception", raise_exception})));
      for (const bool gen : {true, false}) {
        vars.set("add_generation_prompt", jinja::Value::boolean(gen));
        const std::string out = tmpl->render(vars, limits);
        fuzz::touch(reinterpret_cast<const uint8_t*>(out.data()), out.size());
      }
    });
  }
  return 0;
}
