#include "engine/sampling_params.h"

#include <cmath>

#include "core/error.h"

namespace lserve {

void SamplingParams::validate() const {
  LSERVE_CHECK(std::isfinite(temperature) && temperature >= 0 && temperature <= 100,
               "temperature must be in [0, 100], got {}", temperature);
  LSERVE_CHECK(top_k >= 0, "top_k must be >= 0 (0 disables it), got {}", top_k);
  LSERVE_CHECK(top_p > 0 && top_p <= 1, "top_p must be in (0, 1], got {}", top_p);
  LSERVE_CHECK(min_p >= 0 && min_p <= 1, "min_p must be in [0, 1], got {}", min_p);
  LSERVE_CHECK(
      std::isfinite(repetition_penalty) && repetition_penalty > 0 && repetition_penalty <= 10,
      "repetition_penalty must be in (0, 10], got {}", repetition_penalty);
  LSERVE_CHECK(repeat_last_n >= -1, "repeat_last_n must be >= -1, got {}", repeat_last_n);
  LSERVE_CHECK(std::isfinite(presence_penalty) && std::abs(presence_penalty) <= 2,
               "presence_penalty must be in [-2, 2], got {}", presence_penalty);
  LSERVE_CHECK(std::isfinite(frequency_penalty) && std::abs(frequency_penalty) <= 2,
               "frequency_penalty must be in [-2, 2], got {}", frequency_penalty);
  LSERVE_CHECK(logit_bias.size() <= 300, "at most 300 logit_bias entries are allowed, got {}",
               logit_bias.size());
  for (const auto& [token, bias] : logit_bias) {
    LSERVE_CHECK(token >= 0, "logit_bias token ids must be >= 0, got {}", token);
    LSERVE_CHECK(std::isfinite(bias) && std::abs(bias) <= 100,
                 "logit_bias values must be in [-100, 100], got {} for token {}", bias, token);
  }
  LSERVE_CHECK(max_tokens >= 1, "max_tokens must be >= 1, got {}", max_tokens);
  LSERVE_CHECK(stop.size() <= 16, "at most 16 stop strings are allowed, got {}", stop.size());
  LSERVE_CHECK(logprobs >= -1 && logprobs <= kMaxLogprobs,
               "logprobs must be between 0 and {}, got {}", kMaxLogprobs, logprobs);
  for (const auto& s : stop) {
    LSERVE_CHECK(!s.empty() && s.size() <= 256, "stop strings must be 1..256 bytes long");
  }
}

}  // namespace lserve
