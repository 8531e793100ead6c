#include "server/engine_loop.h"

#include "core/error.h"
#include "core/log.h"

namespace lserve::server {
namespace {

double seconds_between(std::chrono::steady_clock::time_point a,
                       std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

EngineLoop::EngineLoop(Engine& engine, Metrics& metrics, EngineLoopConfig config)
    : engine_(engine), metrics_(metrics), config_(config), thread_([this] { run(); }) {}

EngineLoop::~EngineLoop() { stop(); }

Admission EngineLoop::submit(Request request, std::shared_ptr<RequestChannel> channel) {
  if (draining_) return Admission::kShuttingDown;
  if (outstanding_.fetch_add(1) >= config_.max_pending) {
    outstanding_.fetch_sub(1);
    return Admission::kQueueFull;
  }
  {
    std::lock_guard lock(mu_);
    if (stop_) {
      outstanding_.fetch_sub(1);
      return Admission::kShuttingDown;
    }
    inbox_.push_back({std::move(channel), std::move(request)});
  }
  cv_.notify_one();
  return Admission::kAccepted;
}

void EngineLoop::cancel(const std::shared_ptr<RequestChannel>& channel) {
  if (channel->finished()) return;
  {
    std::lock_guard lock(mu_);
    inbox_.push_back({channel, std::nullopt});
  }
  cv_.notify_one();
}

void EngineLoop::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

bool EngineLoop::healthy(std::string* why) const {
  if (failed_steps_.load() < config_.unhealthy_after_failed_steps) return true;
  if (why) {
    std::lock_guard lock(failure_mu_);
    *why = last_failure_;
  }
  return false;
}

void EngineLoop::run() {
  publish_snapshot();  // /metrics shows the pools' sizes before the first request
  for (;;) {
    std::vector<Command> commands;
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      const bool busy = engine_.has_work();
      cv_.wait(lock, [&] { return stop_ || !inbox_.empty() || busy; });
      commands.swap(inbox_);
      stopping = stop_;
    }
    // Nothing may escape this thread: an exception fails the requests in flight instead.
    try {
      for (Command& c : commands) handle(c);
      if (stopping) {
        for (const auto& [id, active] : active_) engine_.cancel(id);
      }
      if (engine_.has_work()) {
        std::vector<SeqOutput> outputs = engine_.step();
        // Gauges first: a client that reads /metrics right after its answer sees its pages freed.
        publish_snapshot();
        dispatch(outputs, stopping);
        failed_steps_ = 0;
      }
    } catch (const std::exception& e) {
      log::error("engine step failed: {}; failing the {} requests in flight", e.what(),
                 active_.size());
      {
        std::lock_guard lock(failure_mu_);
        last_failure_ = e.what();
      }
      if (++failed_steps_ == config_.unhealthy_after_failed_steps) {
        log::error("{} engine steps in a row failed: /health reports 503 until one succeeds",
                   failed_steps_.load());
      }
      fail_all(e.what());
    }
    publish_snapshot();
    if (stopping) break;
  }
  // Whatever the engine could not finish (it failed while stopping) still gets an answer.
  fail_all("the server stopped");
}

void EngineLoop::handle(Command& c) {
  if (!c.request) {
    const auto it = ids_.find(c.channel.get());
    try {
      if (it != ids_.end()) engine_.cancel(it->second);
    } catch (const std::exception& e) {
      log::error("cancelling request {} failed: {}", it->second, e.what());
    }
    return;
  }
  const int prompt_tokens = static_cast<int>(c.request->prompt.size());
  try {
    const int64_t id = engine_.submit(std::move(*c.request));
    Active a;
    a.channel = c.channel;
    a.submit_step = engine_.stats().steps;
    active_.emplace(id, std::move(a));
    ids_.emplace(c.channel.get(), id);
    metrics_.count_prompt_tokens(prompt_tokens);
  } catch (const std::exception& e) {
    RequestUpdate u;
    u.finished = true;
    u.finish_reason = FinishReason::kError;
    u.error = e.what();
    u.prompt_tokens = prompt_tokens;
    if (c.channel->counted()) metrics_.count_finished(FinishReason::kError);
    outstanding_.fetch_sub(1);
    c.channel->push(std::move(u));
  }
}

void EngineLoop::dispatch(std::vector<SeqOutput>& outputs, bool shutting_down) {
  const Clock::time_point now = Clock::now();
  for (SeqOutput& out : outputs) {
    const auto it = active_.find(out.id);
    if (it == active_.end()) continue;
    Active& a = it->second;
    if (!out.new_tokens.empty()) {
      if (!a.got_first_token) {
        a.got_first_token = true;
        a.timing.time_to_first_token_s = seconds_between(a.channel->arrival(), now);
        a.timing.steps_to_first_token = engine_.stats().steps - a.submit_step;
        metrics_.observe_time_to_first_token(a.timing.time_to_first_token_s);
      } else {
        metrics_.observe_inter_token_latency(seconds_between(a.last_token, now));
      }
      a.last_token = now;
      metrics_.count_generation_tokens(static_cast<int64_t>(out.new_tokens.size()));
    }
    RequestUpdate u;
    u.text = std::move(out.new_text);
    u.tokens = std::move(out.new_tokens);
    u.logprobs = std::move(out.logprobs);
    if (!out.finished) {
      a.channel->push(std::move(u));
      continue;
    }
    u.finished = true;
    u.finish_reason = out.finish_reason;
    u.error = std::move(out.error);
    u.shutting_down = shutting_down && out.finish_reason == FinishReason::kCancelled;
    u.prompt_tokens = out.prompt_tokens;
    u.completion_tokens = out.completion_tokens;
    a.timing.e2e_s = seconds_between(a.channel->arrival(), now);
    if (out.finish_reason == FinishReason::kStop || out.finish_reason == FinishReason::kLength) {
      metrics_.observe_e2e_latency(a.timing.e2e_s);
    }
    finish_active(out.id, std::move(u));
  }
}

void EngineLoop::finish_active(int64_t id, RequestUpdate update) {
  const auto it = active_.find(id);
  LSERVE_ASSERT(it != active_.end());
  const std::shared_ptr<RequestChannel> channel = std::move(it->second.channel);
  update.timing = it->second.timing;
  ids_.erase(channel.get());
  active_.erase(it);
  if (channel->counted()) metrics_.count_finished(update.finish_reason);
  outstanding_.fetch_sub(1);
  channel->push(std::move(update));
}

void EngineLoop::fail_all(const std::string& why) {
  std::vector<int64_t> ids;
  for (const auto& [id, active] : active_) ids.push_back(id);
  for (int64_t id : ids) {
    try {
      engine_.cancel(id);  // frees its pages
    } catch (const std::exception& e) {
      log::error("cancelling request {} failed: {}", id, e.what());
    }
    RequestUpdate u;
    u.finished = true;
    u.finish_reason = FinishReason::kError;
    u.error = why;
    finish_active(id, std::move(u));
  }
  try {
    engine_.step();  // collects the cancellations; nothing is left to run
  } catch (const std::exception& e) {
    log::error("engine step after a failure failed too: {}", e.what());
  }
}

void EngineLoop::publish_snapshot() {
  EngineSnapshot s;
  s.running = static_cast<int>(engine_.num_running());
  s.waiting = static_cast<int>(engine_.num_waiting());
  s.pages_used = engine_.blocks().pool().num_used();
  s.pages_total = engine_.blocks().pool().num_pages();
  s.stream_pages_used = engine_.blocks().stream_pool().num_used();
  s.stream_pages_total = engine_.blocks().stream_pool().num_pages();
  const EngineStats& st = engine_.stats();
  s.steps = st.steps;
  s.preemptions = st.preemptions;
  s.prefill_tokens_computed = st.prompt_tokens;
  s.decode_kv_bytes_read = st.decode_kv.sparse_bytes;
  s.decode_kv_bytes_dense = st.decode_kv.dense_bytes;
  s.pages_cached = engine_.blocks().pool().num_cached();
  s.stream_pages_cached = engine_.blocks().stream_pool().num_cached();
  s.prefix_cache_queries = engine_.prefix_cache_stats().queries;
  s.prefix_cache_hits = engine_.prefix_cache_stats().hits;
  metrics_.set_engine(s);
}

}  // namespace lserve::server
