// Default sampling parameters a Hugging Face model folder ships in generation_config.json. As
// vLLM's `--generation-config auto` (its default), they take the place of lserve's built-in
// defaults for whatever a request (or a command-line flag) leaves unset; `vllm` ignores the file.
#pragma once

#include <optional>
#include <string>

#include "engine/sampling_params.h"

namespace lserve {

enum class GenerationConfigMode { kAuto, kVllm };

// "auto" or "vllm"; Error otherwise.
GenerationConfigMode parse_generation_config_mode(const std::string& name);

// Which fields the caller set itself: generation_config.json does not override those.
struct ExplicitSamplingFields {
  bool temperature = false;
  bool top_p = false;
  bool top_k = false;
  bool min_p = false;
  bool repetition_penalty = false;
  bool max_tokens = false;
};

// The fields lserve takes from the file (the ones vLLM takes); the others (do_sample, eos ids,
// bos ids, ...) describe the model, not how to sample it, and are ignored.
struct GenerationConfig {
  std::string source;  // the file, for messages
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;  // 0 and -1 both mean off, as in transformers and vLLM
  std::optional<float> min_p;
  std::optional<float> repetition_penalty;
  std::optional<int> max_new_tokens;

  bool empty() const;
  // Writes the values present into `p`, except the fields in `keep` (max_new_tokens goes to
  // max_tokens).
  void apply(SamplingParams& p, const ExplicitSamplingFields& keep = {}) const;
  // "temperature=0.7 top_p=0.95", for the log.
  std::string summary() const;
};

// Parses the text of a generation_config.json; Error naming `source` and the field when a value
// has the wrong type or is out of range. Null values count as absent.
GenerationConfig parse_generation_config(const std::string& json_text, const std::string& source);

// The generation_config.json of the model at `model_path` (a Hugging Face folder), or nothing: a
// GGUF file carries no such defaults, and a folder may lack the file.
std::optional<GenerationConfig> find_generation_config(const std::string& model_path);

}  // namespace lserve
