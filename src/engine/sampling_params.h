// Per-request generation parameters, validated with errors that name the offending field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lserve {

struct SamplingParams {
  static constexpr int kMaxLogprobs = 20;  // as OpenAI's top_logprobs

  float temperature = 0.8f;         // 0 = greedy
  int top_k = 40;                   // 0 = off
  float top_p = 0.95f;              // 1 = off
  float min_p = 0.05f;              // 0 = off; keeps tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // 1 = off; divides positive logits of recent tokens
  int repeat_last_n = 64;           // window of tokens the penalty looks at (-1 = all)
  // OpenAI's penalties over the tokens generated so far (not the prompt): each logit loses
  // frequency_penalty * (times generated) + presence_penalty * (generated at all). [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Added to a token's logit before penalties and sampling (OpenAI logit_bias), [-100, 100].
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;  // unset: random
  int max_tokens = 256;
  std::vector<std::string> stop;        // stop strings (not included in the output)
  std::vector<int32_t> stop_token_ids;  // in addition to the model's end-of-turn tokens
  bool ignore_eos = false;
  int logprobs = -1;  // -1: none; 0..20: report each token's logprob and this many alternatives

  // Throws Error naming the field when a value is out of range.
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
};

}  // namespace lserve
