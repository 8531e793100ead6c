#include "server/stats_log.h"

#include "core/log.h"

namespace lserve::server {

StatsLog::StatsLog(const Metrics& metrics, std::chrono::milliseconds interval)
    : metrics_(metrics), interval_(interval) {}

void StatsLog::tick(Clock::time_point now) {
  if (started_ && now - last_ < interval_) return;
  const EngineSnapshot e = metrics_.engine();
  // Prompt throughput is what the engine computed: tokens found in the prefix cache cost nothing
  // and are not counted, recomputation after a preemption is.
  const int64_t prompt = e.prefill_tokens_computed;
  const int64_t generation = metrics_.generation_tokens();
  if (started_) {
    const double seconds = std::chrono::duration<double>(now - last_).count();
    const int64_t new_prompt = prompt - last_prompt_tokens_;
    const int64_t new_generation = generation - last_generation_tokens_;
    if (new_prompt > 0 || new_generation > 0 || e.running > 0 || e.waiting > 0) {
      log::info(
          "Avg prompt throughput: {:.1f} tokens/s, Avg generation throughput: {:.1f} tokens/s, "
          "Running: {} reqs, Waiting: {} reqs, KV cache usage: {:.1f}%, Prefix cache hit rate: "
          "{:.1f}%",
          new_prompt / seconds, new_generation / seconds, e.running, e.waiting,
          100 * kv_cache_usage(e), 100 * prefix_cache_hit_rate(e));
    }
  }
  started_ = true;
  last_ = now;
  last_prompt_tokens_ = prompt;
  last_generation_tokens_ = generation;
}

}  // namespace lserve::server
