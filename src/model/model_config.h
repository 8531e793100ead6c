// The architecture hyper-parameters of a Llama-family model, read from GGUF metadata or a Hugging
// Face config.json, validated once so the forward pass can trust them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"

namespace lserve {

// How RoPE pairs the channels of a head: GGUF llama/mistral files store Q/K permuted so that
// adjacent channels (2i, 2i+1) rotate together; HF checkpoints and GGUF qwen2 rotate channel i with
// i + d/2 (the NEOX / "half split" convention).
enum class RopeStyle { kAdjacentPairs, kHalfSplit };

struct ModelConfig {
  std::string arch;  // llama, mistral, qwen2
  std::string name;
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int d_ff = 0;
  int vocab_size = 0;
  int max_context = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeStyle rope_style = RopeStyle::kHalfSplit;
  // Per-frequency divisors (head_dim/2 entries) from rope scaling; empty = no scaling.
  std::vector<float> rope_freq_factors;
  bool qkv_bias = false;
  bool tied_embeddings = false;

  int group_size() const { return n_heads / n_kv_heads; }
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }

  // Throws Error (naming `source`) when the numbers are inconsistent or out of range.
  void validate(const std::string& source) const;
  std::string summary() const;
};

// Reads the config from GGUF metadata (`{arch}.block_count`, ...). Rope freq factors come from the
// `rope_freqs.weight` tensor when present (how GGUF stores Llama-3.1 rope scaling).
ModelConfig config_from_gguf(const GgufFile& gguf);

// Parses a Hugging Face config.json text (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM).
ModelConfig config_from_hf_json(const std::string& json_text, const std::string& source);

// Llama-3 rope scaling ("rope_type": "llama3") as per-frequency divisors.
std::vector<float> llama3_rope_factors(int head_dim, float theta, float factor,
                                       float low_freq_factor, float high_freq_factor,
                                       int original_max_positions);

}  // namespace lserve
