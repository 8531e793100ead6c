#include "server/request_channel.h"

namespace lserve::server {

void RequestUpdate::merge(RequestUpdate&& later) {
  text += later.text;
  tokens.insert(tokens.end(), later.tokens.begin(), later.tokens.end());
  logprobs.insert(logprobs.end(), std::make_move_iterator(later.logprobs.begin()),
                  std::make_move_iterator(later.logprobs.end()));
  if (later.finished) {
    finished = true;
    finish_reason = later.finish_reason;
    error = std::move(later.error);
    shutting_down = later.shutting_down;
    prompt_tokens = later.prompt_tokens;
    completion_tokens = later.completion_tokens;
    timing = later.timing;
  }
}

std::optional<RequestUpdate> RequestChannel::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return pending_.has_value(); });
  std::optional<RequestUpdate> out = std::move(pending_);
  pending_.reset();
  return out;
}

void RequestChannel::push(RequestUpdate update) {
  const bool last = update.finished;
  if (last && on_finished_) on_finished_(update);
  {
    std::lock_guard lock(mu_);
    if (pending_) {
      pending_->merge(std::move(update));
    } else {
      pending_ = std::move(update);
    }
  }
  if (last) finished_ = true;
  cv_.notify_all();
  if (bell_) bell_->ring();
}

void Doorbell::ring() {
  {
    std::lock_guard lock(mu_);
    ++rings_;
  }
  cv_.notify_all();
  std::lock_guard lock(listener_mu_);
  if (listener_) listener_();
}

void Doorbell::set_listener(std::function<void()> fn) {
  std::function<void()> old;
  std::lock_guard lock(listener_mu_);
  old.swap(listener_);
  listener_ = std::move(fn);
}

uint64_t Doorbell::rings() {
  std::lock_guard lock(mu_);
  return rings_;
}

void Doorbell::wait(uint64_t seen, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return rings_ != seen; });
}

}  // namespace lserve::server
