// Log-probabilities of sampled tokens, for the OpenAI `logprobs` options. They describe the
// model's own distribution (log-softmax of the raw logits, before penalties or temperature), as
// vLLM reports them by default, so they say how close two candidates were regardless of sampling.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace lserve {

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // best first; ties by lower id
};

}  // namespace lserve
