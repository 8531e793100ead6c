#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"

namespace lserve {
namespace {

void apply_repetition_penalty(std::span<float> logits, const SamplingParams& p,
                              std::span<const int32_t> history) {
  if (p.repetition_penalty == 1.0f || history.empty()) return;
  const size_t n = p.repeat_last_n < 0
                       ? history.size()
                       : std::min(history.size(), static_cast<size_t>(p.repeat_last_n));
  std::unordered_set<int32_t> seen(history.end() - static_cast<std::ptrdiff_t>(n), history.end());
  for (int32_t t : seen) {
    if (t < 0 || static_cast<size_t>(t) >= logits.size()) continue;
    float& l = logits[t];
    l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
  }
}

void apply_logit_bias(std::span<float> logits, const SamplingParams& p) {
  for (const auto& [token, bias] : p.logit_bias) {
    if (static_cast<size_t>(token) < logits.size()) logits[token] += bias;
  }
}

void apply_openai_penalties(std::span<float> logits, const SamplingParams& p,
                            std::span<const int32_t> generated) {
  if ((p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) || generated.empty()) return;
  std::unordered_map<int32_t, int> count;
  for (int32_t t : generated) ++count[t];
  for (const auto& [t, n] : count) {
    if (t < 0 || static_cast<size_t>(t) >= logits.size()) continue;
    logits[t] -= p.frequency_penalty * static_cast<float>(n) + p.presence_penalty;
  }
}

}  // namespace

int32_t sample_token(std::span<float> logits, const SamplingParams& p,
                     std::span<const int32_t> history, std::mt19937_64& rng, size_t prompt_len) {
  LSERVE_ASSERT(!logits.empty());
  apply_logit_bias(logits, p);
  apply_repetition_penalty(logits, p, history);
  apply_openai_penalties(logits, p, history.subspan(std::min(prompt_len, history.size())));
  if (p.greedy()) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates sorted by logit (descending); top-k first so the sort is partial.
  const int vocab = static_cast<int>(logits.size());
  const int k = p.top_k > 0 ? std::min(p.top_k, vocab) : vocab;
  std::vector<int32_t> idx(vocab);
  std::iota(idx.begin(), idx.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), by_logit);
  idx.resize(k);

  std::vector<double> probs(k);
  const double mx = logits[idx[0]];
  double sum = 0;
  for (int i = 0; i < k; ++i) {
    probs[i] = std::exp((logits[idx[i]] - mx) / p.temperature);
    sum += probs[i];
  }
  for (auto& q : probs) q /= sum;

  // min-p: drop tokens far less likely than the best one.
  int keep = k;
  if (p.min_p > 0) {
    const double floor = p.min_p * probs[0];
    keep = 1;
    while (keep < k && probs[keep] >= floor) ++keep;
  }
  // top-p: the smallest prefix whose mass reaches top_p.
  if (p.top_p < 1.0f) {
    double cum = 0;
    int n = 0;
    while (n < keep) {
      cum += probs[n++];
      if (cum >= p.top_p) break;
    }
    keep = n;
  }
  std::discrete_distribution<int> dist(probs.begin(), probs.begin() + keep);
  return idx[dist(rng)];
}

}  // namespace lserve
