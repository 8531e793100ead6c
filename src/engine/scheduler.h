// Continuous batching: every step takes the running sequences (decodes and unfinished prompt
// chunks) first, then admits waiting ones while the token budget and KV pages last. Prompts are
// split into chunks so one long prompt cannot stall the streams already running. When pages run
// out, the most recently admitted sequence is preempted (pages freed, recomputed later).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/sequence.h"
#include "kv/block_manager.h"
#include "kv/step_plan.h"

namespace lserve {

struct SchedulerConfig {
  int max_num_seqs = 64;              // sequences in one step
  int max_num_batched_tokens = 2048;  // new tokens in one step (prefill chunks + decodes)
};

struct ScheduledStep {
  StepPlan plan;
  std::vector<Sequence*> seqs;  // parallel to plan.seqs
  int num_preempted = 0;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& blocks);

  void add(Sequence* seq);
  // Drops a sequence from the queues and frees its pages (finished or cancelled).
  void remove(Sequence* seq);
  // Builds the next step; an empty plan means there is nothing to run.
  ScheduledStep schedule();

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const SchedulerConfig& config() const { return config_; }

 private:
  void preempt(Sequence* seq);
  static void add_to_plan(ScheduledStep& step, Sequence* seq, int32_t n);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
};

}  // namespace lserve
