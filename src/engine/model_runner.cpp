#include "engine/model_runner.h"

#include <algorithm>

#include "core/error.h"
#include "core/log.h"

namespace lserve {
namespace {

std::vector<int> make_buckets(int max_seqs) {
  std::vector<int> b;
  for (int n : {1, 2, 4, 8}) {
    if (n < max_seqs) b.push_back(n);
  }
  for (int n = 16; n < max_seqs; n += 8) b.push_back(n);
  b.push_back(max_seqs);
  return b;
}

int64_t workspace_size(const Model& m, const Backend& be, const RunnerConfig& c) {
  const int64_t rows = std::max(c.max_step_tokens, c.max_seqs);
  return m.workspace_bytes(rows, c.max_seqs, be.compute_dtype());
}

}  // namespace

ModelRunner::ModelRunner(Model& model, Backend& backend, KvCache& cache, const RunnerConfig& config)
    : model_(model),
      backend_(backend),
      cache_(cache),
      config_(config),
      buckets_(make_buckets(config.max_seqs)),
      ws_(backend, workspace_size(model, backend, config)) {}

bool ModelRunner::recordable(const StepPlan& plan) const {
  if (config_.enforce_eager || plan.seqs.size() > static_cast<size_t>(buckets_.back())) {
    return false;
  }
  return std::all_of(plan.seqs.begin(), plan.seqs.end(),
                     [](const SeqStep& s) { return s.decode && s.q_len == 1 && s.want_logits; });
}

void ModelRunner::forward_and_sample(const StepPlan& plan) {
  Tensor logits = model_.forward(plan, backend_, cache_, ws_);
  if (!logits.empty()) backend_.sample(logits, plan);
}

std::span<const SampledToken> ModelRunner::run(StepPlan& plan) {
  const size_t wanted = plan.logits_rows.size();
  if (!recordable(plan) || !backend_.can_record()) {
    backend_.begin_step(plan, cache_);
    forward_and_sample(plan);
    ++stats_.eager_steps;
    return wanted > 0 ? backend_.sampled().first(wanted) : std::span<const SampledToken>{};
  }
  const int n = static_cast<int>(plan.seqs.size());
  plan.device_planned = true;
  plan.padded_rows = *std::lower_bound(buckets_.begin(), buckets_.end(), n);
  // Padding rows sample greedily from their (meaningless) logits; nobody reads them.
  SampleRow pad{};
  pad.top_p = 1.0f;
  pad.vocab = model_.config().vocab_size;
  pad.logprobs = -1;
  plan.sampling.resize(plan.padded_rows, pad);
  const bool refresh = std::any_of(plan.seqs.begin(), plan.seqs.end(),
                                   [](const SeqStep& s) { return s.refresh_selection; });
  const auto key = std::make_pair(plan.padded_rows, refresh);
  backend_.begin_step(plan, cache_);
  if (auto it = recordings_.find(key); it != recordings_.end()) {
    if (it->second->replay()) {
      ++stats_.replayed_steps;
      return backend_.sampled().first(wanted);
    }
    // The backend moved a buffer the recording points at: run this step directly, record anew.
    recordings_.erase(it);
    warmed_[key] = false;
  }
  if (!warmed_[key]) {
    forward_and_sample(plan);
    warmed_[key] = true;
    ++stats_.eager_steps;
  } else {
    auto rec = backend_.record([&] { forward_and_sample(plan); });
    LSERVE_ASSERT(rec && rec->replay());
    recordings_.emplace(key, std::move(rec));
    ++stats_.recordings;
    ++stats_.replayed_steps;
    log::debug("recorded the decode step of {} sequence slots{}", key.first,
               key.second ? " (with page selection)" : "");
  }
  return backend_.sampled().first(wanted);
}

}  // namespace lserve
