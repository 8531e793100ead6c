// Loads a model (config, weights onto a backend, tokenizer spec) from a GGUF file, a Hugging Face
// folder (config.json + safetensors + tokenizer.json), or random "dummy" weights for benchmarks.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "model/model_config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace lserve {

class Backend;

enum class LoadFormat { kAuto, kGguf, kHf, kDummy };

LoadFormat parse_load_format(const std::string& name);  // auto, gguf, hf (safetensors), dummy

struct LoadedModel {
  std::string source;
  ModelConfig config;
  ModelWeights weights;
  std::optional<TokenizerSpec> tokenizer;  // absent for dummy weights without tokenizer.json
};

struct LoadOptions {
  LoadFormat format = LoadFormat::kAuto;
  uint64_t dummy_seed = 0;
  // Called after each tensor: (tensors done, tensors total).
  std::function<void(int, int)> progress;
};

LoadedModel load_model(const std::string& path, Backend& backend, const LoadOptions& options);

// Resolves "default" to the default model's cached GGUF file (models/ under the source tree or
// $LSERVE_MODEL_DIR) and checks that other paths exist; the error says how to fetch the default.
std::string resolve_model_path(const std::string& name);

// Reads the tokenizer stored in GGUF metadata (tokenizer.ggml.*): byte-level BPE (model "gpt2")
// or SentencePiece BPE (model "llama": tokens, scores, token types, add_space_prefix).
TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& gguf);

}  // namespace lserve
