// Per-request generation parameters, validated with errors that name the offending field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lserve {

struct SamplingParams {
  static constexpr int kMaxLogprobs = 20;  // as OpenAI's top_logprobs

  float temperature = 0.8f;  // 0 = greedy
  int top_k = 40;            // 0 = off
  float top_p = 0.95f;       // 1 = off
  float min_p = 0.05f;       // 0 = off; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1 = off; divides positive logits of recent tokens
  int repeat_last_n = 64;    // window of tokens the penalty looks at (-1 = all)
  std::optional<uint64_t> seed;  // unset: random
  int max_tokens = 256;
  std::vector<std::string> stop;       // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;  // in addition to the model's end-of-turn tokens
  bool ignore_eos = false;
  int logprobs = -1;  // -1: none; 0..20: report each token's logprob and this many alternatives

  // Throws Error naming the field when a value is out of range.
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
};

}  // namespace lserve
