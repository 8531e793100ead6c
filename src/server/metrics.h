// Prometheus metrics for /metrics, named like vLLM's under the `lserve:` prefix. The engine
// thread records; HTTP threads render. One mutex guards everything: updates are a few per step.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/request.h"

namespace lserve::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends the _bucket/_sum/_count lines; `labels` is `key="value"` text without braces.
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Engine state copied out by the engine thread after each step.
struct EngineSnapshot {
  int running = 0;
  int waiting = 0;  // in the engine's queue plus accepted but not yet handed to it
  int pages_used = 0, pages_total = 0;                // retrieval pool
  int stream_pages_used = 0, stream_pages_total = 0;  // streaming pool
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t prefill_tokens_computed = 0;  // including recomputation after preemption
  double decode_kv_bytes_read = 0;      // what the configured attention reads (with the selector)
  double decode_kv_bytes_dense = 0;     // what dense attention would have read
  int pages_cached = 0, stream_pages_cached = 0;  // unreferenced pages kept for prefix caching
  int64_t prefix_cache_queries = 0;               // prompt tokens looked up in the prefix cache
  int64_t prefix_cache_hits = 0;                  // of those, found (their KV reused, not computed)
};

// Share of all KV pages (both pools) in use, 0..1.
double kv_cache_usage(const EngineSnapshot& s);
// Prompt tokens found in the prefix cache / looked up, since start; 0 before any lookup.
double prefix_cache_hit_rate(const EngineSnapshot& s);

class Metrics {
 public:
  explicit Metrics(std::string model_name);

  void observe_time_to_first_token(double seconds);
  void observe_inter_token_latency(double seconds);
  void observe_e2e_latency(double seconds);
  void count_prompt_tokens(int64_t n);
  void count_generation_tokens(int64_t n);
  void count_finished(FinishReason reason);
  // `reason`: "queue_full", "shutting_down".
  void count_rejected(const std::string& reason);
  void set_engine(const EngineSnapshot& snapshot);

  EngineSnapshot engine() const;
  int64_t generation_tokens() const;
  std::string render() const;

 private:
  std::string labels_;  // model_name="..."
  mutable std::mutex mu_;
  Histogram ttft_, itl_, e2e_;
  int64_t prompt_tokens_ = 0;
  int64_t generation_tokens_ = 0;
  std::map<std::string, int64_t> finished_;
  std::map<std::string, int64_t> rejected_;
  EngineSnapshot engine_;
};

}  // namespace lserve::server
