// The periodic throughput line, as vLLM's: every interval in which the server had work, one info
// line with the prompt and generation throughput over that interval, the running and waiting
// requests, KV cache usage and the prefix cache hit rate. Computed from what Metrics already keeps,
// so it agrees with /metrics; nothing is logged while the server is idle.
#pragma once

#include <chrono>
#include <cstdint>

#include "server/metrics.h"

namespace lserve::server {

class StatsLog {
 public:
  using Clock = std::chrono::steady_clock;

  explicit StatsLog(const Metrics& metrics,
                    std::chrono::milliseconds interval = std::chrono::seconds(10));

  // Call often (the event loop does, every tick); does something at most once per interval.
  void tick(Clock::time_point now);

 private:
  const Metrics& metrics_;
  const std::chrono::milliseconds interval_;
  bool started_ = false;
  Clock::time_point last_;
  int64_t last_prompt_tokens_ = 0;  // prompt tokens computed (prefill), at last_
  int64_t last_generation_tokens_ = 0;
};

}  // namespace lserve::server
