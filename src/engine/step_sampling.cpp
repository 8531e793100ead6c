#include "engine/step_sampling.h"

#include <algorithm>
#include <map>

namespace lserve {

SampleRow sampling_row(const Sequence& seq, int32_t vocab, std::vector<LogitEdit>& edits) {
  const SamplingParams& p = seq.params;
  SampleRow r{};
  r.temperature = p.temperature;
  r.top_k = p.top_k;
  r.top_p = p.top_p;
  r.min_p = p.min_p;
  r.seed_lo = static_cast<uint32_t>(seq.seed);
  r.seed_hi = static_cast<uint32_t>(seq.seed >> 32);
  // The draw index: a recomputed sequence (after preemption) draws the same numbers again.
  r.counter = static_cast<uint32_t>(seq.num_generated());
  r.vocab = vocab;
  r.logprobs = p.logprobs;

  // Ordered by token so the edit list (and the result) does not depend on hashing.
  std::map<int32_t, LogitEdit> by_token;
  auto edit = [&](int32_t t) -> LogitEdit& {
    auto [it, fresh] = by_token.try_emplace(t, LogitEdit{t, 0.0f, 1.0f, 0.0f});
    return it->second;
  };
  for (const auto& [t, bias] : p.logit_bias) {
    if (t < vocab) edit(t).bias += bias;
  }
  if (p.repetition_penalty != 1.0f) {
    const size_t n = p.repeat_last_n < 0
                         ? seq.tokens.size()
                         : std::min(seq.tokens.size(), static_cast<size_t>(p.repeat_last_n));
    for (size_t i = seq.tokens.size() - n; i < seq.tokens.size(); ++i) {
      if (seq.tokens[i] >= 0 && seq.tokens[i] < vocab) {
        edit(seq.tokens[i]).rep_penalty = p.repetition_penalty;
      }
    }
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    for (const auto& [t, count] : seq.output_counts) {
      if (t < vocab) {
        edit(t).sub = p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
      }
    }
  }
  r.edit_begin = static_cast<int32_t>(edits.size());
  for (const auto& [t, e] : by_token) edits.push_back(e);
  r.edit_end = static_cast<int32_t>(edits.size());
  return r;
}

void add_sampling(StepPlan& plan, const std::vector<Sequence*>& seqs, int32_t vocab) {
  plan.sampling.clear();
  plan.logit_edits.clear();
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (plan.seqs[i].want_logits) {
      plan.sampling.push_back(sampling_row(*seqs[i], vocab, plan.logit_edits));
    }
  }
}

}  // namespace lserve
