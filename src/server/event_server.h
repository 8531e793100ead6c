// An HTTP/1.1 server on one epoll event-loop thread plus a small worker pool: the loop accepts,
// reads, parses, enforces every deadline and limit, and writes (streams included); workers run
// the handlers that take milliseconds. A connection costs a buffer, never a thread, so slow or
// idle clients cannot starve anyone, and thousands of streams need no more threads than one.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "server/connection.h"
#include "server/cors.h"
#include "server/event_loop.h"
#include "server/http_limits.h"
#include "server/router.h"
#include "server/worker_pool.h"

namespace lserve::server {

struct EventServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port
  HttpLimits limits;
  int worker_threads = 4;
  CorsPolicy cors;  // off by default
  // Every error the HTTP layer answers by itself (400, 404, 405, 408, 413, 414, 431, 503, ...).
  std::function<HttpResponse(int status, const std::string& message)> error_response;
  // Optional: a check of each request head before its body is read; a response refuses it.
  std::function<std::optional<HttpResponse>(const HttpRequest& head)> admit;
  // Optional: false makes every response close its connection (the server is draining).
  std::function<bool()> keep_alive;
  // Optional: runs on the loop thread at every tick (20 times a second) for periodic work that
  // needs no thread of its own; it must be quick.
  std::function<void()> on_tick;
};

class EventServer : private ConnectionHost {
 public:
  EventServer(EventServerOptions options, Router router);
  ~EventServer() override;
  EventServer(const EventServer&) = delete;
  EventServer& operator=(const EventServer&) = delete;

  // Binds and listens (no SO_REUSEPORT: a port in use is an Error); returns the port.
  int bind();
  // The event loop, on the calling thread, until stop() has taken effect.
  void run();
  // Thread-safe: stop accepting, close connections that have no request under way, let those
  // that do finish their answer (streams to the end) for at most `grace`, then close the rest;
  // run() then returns. Stop the engine first so that every stream has its end.
  void stop(std::chrono::milliseconds grace);

 private:
  friend class LoopExchange;
  using Clock = std::chrono::steady_clock;
  struct Slot {
    std::unique_ptr<Connection> conn;
    uint32_t events = 0;   // registered with epoll
    bool refused = false;  // over the connection cap: answered 503, closing
  };
  static constexpr uint64_t kListenKey = 1;

  // ConnectionHost
  const HttpLimits& limits() const override { return options_.limits; }
  const Router& router() const override { return router_; }
  const CorsPolicy& cors() const override { return options_.cors; }
  HttpResponse error_response(int status, const std::string& message) override;
  // The 500 answer for a handler or response builder that threw.
  HttpResponse internal_error(const std::exception& e);
  std::optional<HttpResponse> admit(const HttpRequest& head) override;
  bool keep_alive_allowed() override;
  bool reserve_body(size_t bytes) override;
  void release_body(size_t bytes) override;
  std::shared_ptr<ConnectionExchange> new_exchange(uint64_t connection_id) override;
  std::function<void()> waker(uint64_t connection_id) override;
  void handle(const Route& route, HttpRequest request, std::shared_ptr<ConnectionExchange> exchange,
              size_t reserved) override;

  void on_event(uint64_t key, uint32_t events);
  void on_tick();
  void accept_all();
  void begin_stop(Clock::time_point deadline);
  void close_listener();
  // After a connection was driven: forget it if it closed, else update its epoll events.
  void settle(uint64_t id);
  // Drives connection `id` (if still open) with `fn`, then settles it; an exception closes it.
  void on_connection(uint64_t id, const std::function<void(Connection&)>& fn);
  // Outcomes of exchanges, on the loop thread.
  void deliver(uint64_t id, HttpResponse response);
  void deliver_stream(uint64_t id, HttpResponse head, std::shared_ptr<BodySource> body);
  void wake(uint64_t id);

  EventServerOptions options_;
  const Router router_;
  EventLoop loop_;
  std::shared_ptr<WorkerPool> pool_;
  int listen_fd_ = -1;
  std::unordered_map<uint64_t, Slot> conns_;
  uint64_t next_id_ = kListenKey + 1;
  int open_ = 0;      // connections in conns_ that are not refused
  int refusing_ = 0;  // refused ones still closing
  std::atomic<size_t> body_bytes_{0};
  std::atomic<int64_t> last_trim_ms_{0};  // steady clock, of the last malloc_trim
  bool accept_paused_ = false;
  Clock::time_point accept_resume_;
  bool stopping_ = false;
  Clock::time_point stop_deadline_;
};

}  // namespace lserve::server
