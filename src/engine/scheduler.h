// Continuous batching: every step takes the running sequences first (decodes, then unfinished
// prompt chunks), then admits waiting ones while the token budget and KV pages last. Prompts are
// split into chunks so one long prompt cannot stall the streams already running. When pages run
// out, the most recently admitted sequence is preempted (pages freed, recomputed later). The
// scheduler also fills in each sequence's sparse-attention settings for the step.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/sequence.h"
#include "kv/block_manager.h"
#include "kv/step_plan.h"
#include "sparse/sparse_config.h"

namespace lserve {

struct SchedulerConfig {
  int max_num_seqs = 64;              // sequences in one step
  int max_num_batched_tokens = 2048;  // new tokens in one step (prefill chunks + decodes)
  // While requests wait for admission, a prompt already being prefilled takes at most this many
  // tokens of a step, so newcomers start at once instead of after the whole long prompt
  // (0: half of max_num_batched_tokens). Alone, a prompt still gets the whole step.
  int long_prefill_token_threshold = 0;
  // Reuse the cached KV pages of a prompt's longest known prefix (BlockManager: prefix caching).
  bool enable_prefix_caching = false;
  // From the head map (kv/kv_layout.h): the longest of the model's own sliding windows (0: none)
  // and whether some streaming head follows the sparse config's windows. The streaming pool keeps
  // the pages both need.
  int32_t model_window = 0;
  bool sparse_streaming = true;
};

// Prompt tokens looked up in the prefix cache at admission, and those found (vLLM's counters).
struct PrefixCacheStats {
  int64_t queries = 0;
  int64_t hits = 0;
};

struct ScheduledStep {
  StepPlan plan;
  std::vector<Sequence*> seqs;  // parallel to plan.seqs
  int num_preempted = 0;
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, const SparseAttentionConfig& sparse, BlockManager& blocks);

  void add(Sequence* seq);
  // Drops a sequence from the queues and frees its pages (finished or cancelled).
  void remove(Sequence* seq);
  // Builds the next step; an empty plan means there is nothing to run.
  ScheduledStep schedule();

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  const SchedulerConfig& config() const { return config_; }
  const PrefixCacheStats& prefix_cache_stats() const { return prefix_stats_; }

 private:
  void preempt(Sequence* seq);
  // The most recently admitted running sequence not yet in `step` (`fallback` if none is left).
  Sequence* pick_victim(const ScheduledStep& step, Sequence* fallback) const;
  // Tokens a running prompt may take this step, out of `budget`.
  int32_t prefill_chunk(const Sequence& seq, int budget) const;
  // Dynamic prefill sparsity estimates each query block from the rows computed together, so for a
  // sequence it applies to, prefill chunks end on block boundaries (where the step's budget
  // holds a whole block; the prompt's end is always one) and cached prefixes are reused in whole
  // blocks only: the estimates, and so the results, do not depend on batching or on the cache.
  int32_t prefill_align(const Sequence& seq) const;
  int32_t aligned_chunk(const Sequence& seq, int32_t n) const;
  // Window of the streaming heads for the sequence's next tokens.
  int32_t stream_window(const Sequence& seq) const;
  // The trailing positions whose streaming pages must stay: the sparse streaming heads' window
  // and the model's sliding windows, whichever is longer.
  int32_t keep_window(const Sequence& seq) const;
  // Frees window pages the sequence's next step cannot see, then checks it can grow by n.
  bool make_room(Sequence* seq, int32_t n);
  void add_to_plan(ScheduledStep& step, Sequence* seq, int32_t n);

  SchedulerConfig config_;
  SparseAttentionConfig sparse_;
  BlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  PrefixCacheStats prefix_stats_;
};

}  // namespace lserve
