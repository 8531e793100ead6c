// Fuzz target: the body of an OpenAI /v1/completions or /v1/chat/completions request, through the
// server's own parser (src/server/openai_request.cpp): JSON with its depth and size limits, then
// both request shapes, then what the server does next with a parsed request that needs no model
// (sampling-parameter validation, the chat templates).
//
// The server's contract: any body either parses or is refused with a 400 ApiError; any other
// exception (a 500), a 4xx/5xx of another status, a crash or a sanitizer report is a bug, and
// aborts here so that libFuzzer records the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "engine/sampling_params.h"
#include "fuzz_common.h"
#include "server/api_error.h"
#include "server/openai_request.h"
#include "tokenizer/chat_template.h"

namespace {

using namespace lserve;
using namespace lserve::server;

// Runs `fn`, which may only succeed or throw a 400 ApiError (rendered as the server renders it).
template <class Fn>
bool parses_or_400(Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const ApiError& e) {
    if (e.status() != 400) fuzz::unexpected("ApiError of a status other than 400", e.what());
    fuzz::note_refusal(e.what());
    dump_json(e.to_json());
    return false;
  } catch (const std::exception& e) {
    fuzz::unexpected(typeid(e).name(), e.what());
  } catch (...) {
    fuzz::unexpected("of a non-std type", "");
  }
}

void after_parsing(const GenerationRequest& g) {
  // The engine's checks throw Error, which the server turns into a 400 naming the field.
  fuzz::refusals_are_errors([&] { g.params.validate(); });
  if (g.chat) {
    // What the request passes to a template: the builtins render any message shape, and a
    // template's refusal is an Error (a 400), never anything else.
    for (const char* name : {"chatml", "llama3"}) {
      fuzz::refusals_are_errors([&] {
        ChatTemplate::by_name(name).apply(g.messages, g.add_generation_prompt,
                                          {g.tools, nullptr, g.continue_final_message});
      });
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json body;
  if (!parses_or_400([&] { body = parse_body(text); })) return 0;
  GenerationRequest g;
  if (parses_or_400([&] { g = parse_completion_request(body); })) after_parsing(g);
  if (parses_or_400([&] { g = parse_chat_request(body); })) after_parsing(g);
  return 0;
}
