// Fuzz target: a Hugging Face config.json, read into a validated ModelConfig (architecture sizes,
// RoPE theta and scaling, tied embeddings, biases) as load_model() does for an HF folder.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_common.h"
#include "model/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lserve;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::refusals_are_errors([&] { config_from_hf_json(text, "config.json").summary(); });
  return 0;
}
