// Fuzz target: a Hugging Face tokenizer.json with an optional tokenizer_config.json, read into a
// TokenizerSpec and built into a Tokenizer (vocabulary, merges, pre-tokenizer regexes, special
// tokens), which then encodes and decodes a fixed sample and a fuzzed text, and applies the chat
// template the config names.
//
// Input layout: tokenizer.json [ NUL tokenizer_config.json [ NUL text ] ]. JSON text cannot hold
// a raw NUL, so the split never cuts a valid file.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace lserve;

// The next NUL-terminated part of `rest`, which loses it and its NUL.
std::string next_part(std::string_view& rest) {
  const size_t nul = rest.find('\0');
  const std::string part(rest.substr(0, nul));
  rest = nul == std::string_view::npos ? std::string_view() : rest.substr(nul + 1);
  return part;
}

void use(const Tokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.encode(text, true, tok.add_bos());
  tok.decode(ids);
  tok.decode(tok.encode(text, false, false));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string tokenizer_json = next_part(rest);
  const std::string tokenizer_config = next_part(rest);
  const std::string_view text = rest;
  fuzz::refusals_are_errors([&] {
    const Tokenizer tok(Tokenizer::spec_from_hf_json(tokenizer_json, tokenizer_config));
    tok.stop_token_ids();
    use(tok, fuzz::kSampleText);
    use(tok, text);
    const ChatTemplate tmpl = ChatTemplate::resolve("", tok);
    const ChatMessage messages[] = {{"user", std::string(text)}, {"assistant", "Hello!"}};
    use(tok, tmpl.apply(messages, true));
  });
  return 0;
}
