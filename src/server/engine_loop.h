// Runs the single-threaded Engine on one dedicated thread. The HTTP layer hands it requests and
// cancellations through a locked inbox and gets each request's output through its own
// RequestChannel, so a long step (a big prefill chunk) only delays the engine, never the HTTP
// layer: /health, /metrics and new connections keep being answered.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/request_channel.h"

namespace lserve::server {

struct EngineLoopConfig {
  int max_pending = 256;  // accepted requests not yet finished (running + waiting)
  // Consecutive failed engine steps after which the loop reports itself unhealthy (one failure
  // is one bad step, e.g. a request the engine could not run; several in a row mean it cannot
  // serve at all, e.g. a lost GPU).
  int unhealthy_after_failed_steps = 3;
};

enum class Admission { kAccepted, kQueueFull, kShuttingDown };

class EngineLoop {
 public:
  // Starts the engine thread; `engine` and `metrics` must outlive the loop.
  EngineLoop(Engine& engine, Metrics& metrics, EngineLoopConfig config);
  ~EngineLoop();
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Thread-safe. When accepted, `channel` gets the request's output up to a finished update,
  // whatever happens (errors, cancellation, shutdown). Validate the request first
  // (Engine::validate): a request the engine refuses here finishes with kError.
  Admission submit(Request request, std::shared_ptr<RequestChannel> channel);
  // Thread-safe; the channel then gets a finished update with kCancelled (unless it had finished).
  void cancel(const std::shared_ptr<RequestChannel>& channel);

  // From now on submit() answers kShuttingDown; requests in flight continue.
  void begin_drain() { draining_ = true; }
  bool draining() const { return draining_.load(); }
  // Thread-safe. False after unhealthy_after_failed_steps engine steps in a row have failed, until
  // a step succeeds; *why then holds the last failure. (/health answers 503 while false.)
  bool healthy(std::string* why = nullptr) const;
  int outstanding() const { return outstanding_.load(); }
  // Whether `n` more requests would be refused as kQueueFull now: a cheap early answer before a
  // request's prompt is tokenized (submit() still decides).
  bool full_for(int n) const { return outstanding_.load() + n > config_.max_pending; }
  // Cancels whatever is still in flight (each gets its final update) and joins the thread.
  void stop();

 private:
  using Clock = std::chrono::steady_clock;
  struct Command {
    std::shared_ptr<RequestChannel> channel;
    std::optional<Request> request;  // empty: cancel
  };
  struct Active {
    std::shared_ptr<RequestChannel> channel;
    int64_t submit_step = 0;
    bool got_first_token = false;
    Clock::time_point last_token;
    RequestTiming timing;
  };

  void run();
  void handle(Command& command);
  void dispatch(std::vector<SeqOutput>& outputs, bool shutting_down);
  void fail_all(const std::string& why);
  void finish_active(int64_t id, RequestUpdate update);
  void publish_snapshot();

  Engine& engine_;
  Metrics& metrics_;
  const EngineLoopConfig config_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Command> inbox_;
  bool stop_ = false;
  std::atomic<bool> draining_{false};
  std::atomic<int> outstanding_{0};
  std::atomic<int> failed_steps_{0};  // consecutive
  mutable std::mutex failure_mu_;
  std::string last_failure_;

  // Engine thread only.
  std::unordered_map<int64_t, Active> active_;
  std::unordered_map<const RequestChannel*, int64_t> ids_;

  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace lserve::server
