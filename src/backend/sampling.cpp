#include "backend/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace lserve {

using sampling::logit_key;

namespace {

// Log-softmax of the raw row: its log-sum-exp and the `n_top` best tokens (logit desc, id asc).
void raw_logprobs(std::span<const float> raw, int n_top, double* lse, SampledToken* out) {
  float mx = -INFINITY;
  for (float l : raw) mx = std::max(mx, sampling::clean_logit(l));
  double sum = 0;
  for (float l : raw) sum += std::exp(static_cast<double>(sampling::clean_logit(l)) - mx);
  *lse = mx + std::log(sum);

  std::vector<int32_t> idx(raw.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n_top, idx.end(), [&](int32_t a, int32_t b) {
    const uint32_t ka = logit_key(raw[a]), kb = logit_key(raw[b]);
    return ka > kb || (ka == kb && a < b);
  });
  out->n_top = n_top;
  for (int i = 0; i < n_top; ++i) {
    out->top_ids[i] = idx[i];
    out->top_logprobs[i] = static_cast<float>(sampling::clean_logit(raw[idx[i]]) - *lse);
  }
}

// Steps 2-3 on the edited row (n >= 1 tokens).
int32_t pick(std::span<const float> l, const SampleRow& row) {
  const int n = static_cast<int>(l.size());
  std::vector<uint32_t> key(n);
  for (int i = 0; i < n; ++i) key[i] = logit_key(l[i]);
  const int32_t best = static_cast<int32_t>(std::max_element(key.begin(), key.end()) - key.begin());
  if (sampling::is_greedy(row)) return best;

  // Tokens by (logit desc, id asc); only the top-k set is ever ordered.
  auto before = [&](int32_t a, int32_t b) {
    return key[a] > key[b] || (key[a] == key[b] && a < b);
  };
  const int k = sampling::top_k_count(row, n);
  std::vector<int32_t> set(n);
  std::iota(set.begin(), set.end(), 0);
  if (k < n) {
    std::nth_element(set.begin(), set.begin() + (k - 1), set.end(), before);
    set.resize(k);
  }

  const float m = sampling::key_logit(key[best]);
  const float floor_p = sampling::min_p_floor(row.min_p);
  std::vector<uint64_t> weight(n, 0);  // W of the kept tokens, 0 elsewhere
  uint64_t z = 0, z_kept = 0;
  for (int32_t i : set) {
    const float w = sampling::sample_w(sampling::key_logit(key[i]), m, row.temperature);
    const uint64_t wf = sampling::fixed_weight(w);
    z += wf;
    if (w >= floor_p) {
      weight[i] = wf;
      z_kept += wf;
    }
  }

  const uint64_t target_p = sampling::top_p_target(row.top_p, z);
  if (target_p > 0 && target_p <= z_kept) {
    // The shortest prefix of the min-p survivors reaching the target; tokens of weight 0 never
    // change the running sum or get drawn, so they need no place in the order.
    std::vector<int32_t> order;
    for (int32_t i : set) {
      if (weight[i] > 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), before);
    uint64_t cum = 0;
    size_t cut = 0;
    while (cum < target_p) cum += weight[order[cut++]];
    for (size_t j = cut; j < order.size(); ++j) weight[order[j]] = 0;
    z_kept = cum;
  }

  const uint64_t target = sampling::draw_target(row, z_kept);
  uint64_t cum = 0;
  for (int i = 0; i < n; ++i) {
    cum += weight[i];
    if (cum > target) return i;
  }
  return best;  // unreachable: the best token always stays, with weight 2^40
}

}  // namespace

SampledToken sample_row(std::span<float> logits, const SampleRow& row,
                        std::span<const LogitEdit> edits) {
  SampledToken out{};
  out.token = -1;
  for (int i = 0; i < kMaxTopLogprobs; ++i) out.top_ids[i] = -1;
  const int n = static_cast<int>(std::min<int64_t>(row.vocab, static_cast<int64_t>(logits.size())));
  for (size_t e = 1; e < edits.size(); ++e) {
    if (edits[e].token <= edits[e - 1].token) return out;
  }
  if (n < 1) return out;
  const std::span<float> l = logits.first(static_cast<size_t>(n));

  double lse = 0;
  if (row.logprobs >= 0) {
    raw_logprobs(l, std::min({row.logprobs, kMaxTopLogprobs, n}), &lse, &out);
  }
  // Raw values of the edited tokens, for the logprob of the sampled one.
  std::vector<std::pair<int32_t, float>> raw_edited;
  for (const LogitEdit& e : edits) {
    if (e.token < 0 || e.token >= n) continue;
    if (row.logprobs >= 0) raw_edited.emplace_back(e.token, l[e.token]);
    l[e.token] = sampling::edit_logit(l[e.token], e);
  }

  out.token = pick(l, row);
  if (row.logprobs >= 0) {
    float raw = l[out.token];
    for (const auto& [t, v] : raw_edited) {
      if (t == out.token) raw = v;
    }
    out.logprob = static_cast<float>(sampling::clean_logit(raw) - lse);
  }
  return out;
}

}  // namespace lserve
