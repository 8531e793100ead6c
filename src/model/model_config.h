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
  std::string arch;  // llama, mistral, qwen2, gemma3
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
  // YaRN: cos and sin (so every attention score) scaled by it; 1 otherwise.
  float rope_attention_factor = 1.0f;
  std::string rope_scaling = "none";  // for the summary: none, linear, llama3, yarn, dynamic
  bool qkv_bias = false;
  bool tied_embeddings = false;
  // Gemma 3: each layer's sliding window (0: it attends globally), empty for models without
  // windowed layers; windowed layers rotate with rope_theta_local (and no rope scaling).
  std::vector<int32_t> layer_windows;
  float rope_theta_local = 10000.0f;
  // Attention scores scale by its -1/2 power (Gemma's query_pre_attn_scalar); 0: head_dim.
  float query_pre_attn_scalar = 0.0f;

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

// YaRN (Peng et al. 2023, as Hugging Face transformers computes it): frequencies whose wavelength
// fits `original_max_positions` well (above beta_fast rotations) keep theirs, those below
// beta_slow rotations are divided by `factor`, with a linear ramp between; as per-frequency
// divisors.
std::vector<float> yarn_rope_factors(int head_dim, float theta, float factor,
                                     int original_max_positions, float beta_fast, float beta_slow,
                                     bool truncate);
// YaRN's attention factor: 0.1 ln(factor) + 1 (1 for factor <= 1), or, with DeepSeek's mscale and
// mscale_all_dim, the ratio of the two such terms.
float yarn_attention_factor(float factor, float mscale, float mscale_all_dim);
// Dynamic NTK scaling with the base fixed for the longest context (factor x the original), as
// vLLM does: theta' = theta (factor^2 - factor + 1)^(d / (d - 2)); as divisors.
std::vector<float> dynamic_ntk_rope_factors(int head_dim, float theta, float factor);

}  // namespace lserve
