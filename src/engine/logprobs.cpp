#include "engine/logprobs.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace lserve {

TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int top_n) {
  LSERVE_ASSERT(!logits.empty() && token >= 0 && static_cast<size_t>(token) < logits.size());
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - mx);
  const double lse = mx + std::log(sum);

  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(logits[token] - lse);
  const int n = std::clamp(top_n, 0, static_cast<int>(logits.size()));
  if (n == 0) return out;
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  out.top.reserve(n);
  for (int i = 0; i < n; ++i)
    out.top.emplace_back(idx[i], static_cast<float>(logits[idx[i]] - lse));
  return out;
}

}  // namespace lserve
