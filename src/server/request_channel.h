// The per-request hand-off between the engine thread (producer) and whoever answers the client
// (consumer: the HTTP event loop, or a test). Output that arrives while the consumer is busy is
// merged, so a slow client never makes the engine wait.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/request.h"

namespace lserve::server {

struct RequestTiming {
  double time_to_first_token_s = 0;
  double e2e_s = 0;
  int64_t steps_to_first_token = 0;  // engine steps from submission to the first token
};

// Everything a request produced since the handler last looked.
struct RequestUpdate {
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<TokenLogprob> logprobs;
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;           // with kError: what went wrong inside the engine
  bool shutting_down = false;  // cancelled because the server is stopping
  int prompt_tokens = 0;
  int completion_tokens = 0;
  RequestTiming timing;  // set with `finished`

  void merge(RequestUpdate&& later);
};

// Lets one consumer wait on several channels (the choices of an n > 1 request): every push rings
// it. Read rings() before polling the channels, then wait(seen, ...): a push in between is not
// missed. A consumer that must not block (the event loop) sets a listener instead.
class Doorbell {
 public:
  void ring();
  uint64_t rings();
  // Returns once the count differs from `seen`, or after `timeout`.
  void wait(uint64_t seen, std::chrono::milliseconds timeout);
  // `fn` is called after every ring, on the ringing thread (the engine's): it must be quick and
  // must not call back into this doorbell. Replaces the previous listener; set_listener(nullptr)
  // returns once no call of the old one is running.
  void set_listener(std::function<void()> fn);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t rings_ = 0;
  std::mutex listener_mu_;
  std::function<void()> listener_;
};

class RequestChannel {
 public:
  using Clock = std::chrono::steady_clock;

  using FinishedFn = std::function<void(const RequestUpdate& final_update)>;

  // `counted`: this channel's finish is the request's in the metrics (the first of a request's
  // n choices; the others finish too but are not requests of their own). `on_finished` runs once,
  // on the producer's thread, with the final update as pushed (not merged with output not yet
  // read): it sees how the request ended even when nobody reads the channel any more (a client
  // that left). It must be quick.
  explicit RequestChannel(Clock::time_point arrival, std::shared_ptr<Doorbell> bell = nullptr,
                          bool counted = true, FinishedFn on_finished = nullptr)
      : arrival_(arrival),
        bell_(std::move(bell)),
        counted_(counted),
        on_finished_(std::move(on_finished)) {}

  // Consumer: waits up to `timeout` for output; nullopt if none came.
  std::optional<RequestUpdate> wait(std::chrono::milliseconds timeout);
  // Producer.
  void push(RequestUpdate update);

  Clock::time_point arrival() const { return arrival_; }
  // Set once the final update was pushed; lets the consumer know cancelling is pointless.
  bool finished() const { return finished_.load(); }
  bool counted() const { return counted_; }

 private:
  const Clock::time_point arrival_;
  const std::shared_ptr<Doorbell> bell_;
  const bool counted_;
  const FinishedFn on_finished_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<RequestUpdate> pending_;
  std::atomic<bool> finished_{false};
};

}  // namespace lserve::server
