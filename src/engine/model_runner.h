// Runs one step's plan through the model on its backend and samples the rows that want logits.
// It owns what makes a step fast on a device: the fixed-address workspace of activations, and
// the recordings (CUDA graphs) of decode steps, one per batch-size bucket and selector variant,
// replayed after their tables are written (nano-vllm's ModelRunner, in C++).
#pragma once

#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/workspace.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace lserve {

struct RunnerConfig {
  int max_step_tokens = 2048;  // most tokens in one step (the scheduler's token budget)
  int max_seqs = 64;           // most sequences in one step
  bool enforce_eager = false;  // never record: every step's launches are issued one by one
};

struct RunnerStats {
  int64_t replayed_steps = 0;  // decode steps replayed from a recording
  int64_t eager_steps = 0;
  int recordings = 0;
};

class ModelRunner {
 public:
  ModelRunner(Model& model, Backend& backend, KvCache& cache, const RunnerConfig& config);

  // Runs the plan (whose sampling rows are filled) and returns one sampled token per logits row,
  // valid until the next run. May pad the plan to a recorded batch size.
  std::span<const SampledToken> run(StepPlan& plan);

  // The batch sizes decode steps are padded to when recorded: 1, 2, 4, 8, then multiples of 8
  // up to max_seqs (and max_seqs itself).
  const std::vector<int>& buckets() const { return buckets_; }
  const RunnerStats& stats() const { return stats_; }

 private:
  void forward_and_sample(const StepPlan& plan);
  bool recordable(const StepPlan& plan) const;

  Model& model_;
  Backend& backend_;
  KvCache& cache_;
  RunnerConfig config_;
  std::vector<int> buckets_;
  Workspace ws_;
  // (padded rows, the step refreshes page selections) -> its recording; a key is first run
  // once eagerly (device-planned) so lazily tuned kernels choose before anything is recorded.
  std::map<std::pair<int, bool>, std::unique_ptr<StepRecording>> recordings_;
  std::map<std::pair<int, bool>, bool> warmed_;
  RunnerStats stats_;
};

}  // namespace lserve
