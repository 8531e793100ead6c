// Fuzz target: a GGUF model file, parsed from memory the way load_model() reads one: the reader
// (header, metadata, tensor infos), every typed getter on every key, the model config, the
// tokenizer metadata and a tokenizer built from it (encode, decode, chat template), and the
// dequantization of each tensor, which reads all of its bytes, so a size or offset the reader got
// wrong is an ASan report.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_common.h"
#include "io/dequant.h"
#include "io/gguf.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace lserve;

constexpr uint64_t kMaxDequantElements = uint64_t{1} << 22;

void read_metadata(const GgufFile& g) {
  for (const auto& entry : g.metadata()) {
    const std::string& key = entry.first;
    fuzz::refusals_are_errors([&] { g.opt_string(key); }, true);
    fuzz::refusals_are_errors([&] { g.opt_int(key); }, true);
    fuzz::refusals_are_errors([&] { g.opt_float(key); }, true);
    fuzz::refusals_are_errors([&] { g.opt_bool(key); }, true);
    fuzz::refusals_are_errors([&] { g.get_string_array(key); }, true);
    fuzz::refusals_are_errors([&] { g.get_int_array(key); }, true);
    fuzz::refusals_are_errors([&] { g.get_float_array(key); }, true);
  }
}

void use_tokenizer(const GgufFile& g) {
  const Tokenizer tok(tokenizer_spec_from_gguf(g));
  const std::vector<int32_t> ids = tok.encode(fuzz::kSampleText, true, tok.add_bos());
  tok.decode(ids);
  tok.encode(fuzz::kSampleText, false, false);
  tok.stop_token_ids();
  const ChatTemplate tmpl = ChatTemplate::resolve("", tok);
  const ChatMessage messages[] = {{"user", "Hi there"}, {"assistant", "Hello!"}};
  tok.encode(tmpl.apply(messages, true), true, false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<GgufFile> g;
  if (!fuzz::refusals_are_errors(
          [&] { g = std::make_unique<GgufFile>(std::span(data, size), "fuzz.gguf"); })) {
    return 0;
  }
  read_metadata(*g);
  fuzz::refusals_are_errors([&] { config_from_gguf(*g).summary(); });
  fuzz::refusals_are_errors([&] { use_tokenizer(*g); });
  std::vector<float> values;
  for (const GgufTensorInfo& t : g->tensors()) {
    fuzz::touch(t.data, t.n_bytes);
    if (t.n_elements > kMaxDequantElements) continue;
    values.resize(t.n_elements);
    fuzz::refusals_are_errors(
        [&] { dequantize(t.type, t.data, values.data(), static_cast<int64_t>(t.n_elements)); });
  }
  return 0;
}
