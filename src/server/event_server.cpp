#include "server/event_server.h"

#include <fmt/format.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "core/error.h"
#include "core/log.h"

namespace lserve::server {
namespace {

constexpr std::chrono::milliseconds kTick{50};
// Connections over the cap are answered 503 and closed gracefully; only this many at once, so
// that a flood beyond the cap costs a bounded number of descriptors (the rest are closed at once).
constexpr int kMaxRefusing = 256;
// Descriptors kept for everything but client connections (model files, the engine, logs).
constexpr rlim_t kSpareDescriptors = 64;
constexpr size_t kTrimAfterBodyBytes = 4u << 20;

}  // namespace

// The Exchange of one request: completions are posted to the loop, where the connection (if it
// is still there) writes them. Holds the server only by pointer, dereferenced on the loop thread
// or a worker, both of which end before the server does; other threads (the engine's) only
// reach it through the inbox and the pool, which drop what comes after the server is gone.
class LoopExchange final : public ConnectionExchange,
                           public std::enable_shared_from_this<LoopExchange> {
 public:
  LoopExchange(EventServer* server, uint64_t id)
      : server_(server), id_(id), inbox_(server->loop_.inbox()), pool_(server->pool_) {}

  void respond(HttpResponse response) override {
    if (!claim()) return;
    post(std::move(response));
  }

  void stream(HttpResponse head, std::shared_ptr<BodySource> body) override {
    if (!claim()) {
      body->abort();
      return;
    }
    const bool posted =
        inbox_->post([s = server_, id = id_, head = std::move(head), body]() mutable {
          s->deliver_stream(id, std::move(head), std::move(body));
        });
    if (!posted) body->abort();
  }

  void respond_later(std::function<HttpResponse()> build) override {
    if (!claim()) return;
    pool_->post([self = shared_from_this(), build = std::move(build)] {
      HttpResponse r;
      try {
        r = build();
      } catch (const std::exception& e) {
        log::error("building a response failed: {}", e.what());
        r = self->server_->internal_error(e);
      }
      self->post(std::move(r));
    });
  }

  void on_abort(std::function<void()> fn) override {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      if (!aborted_) {
        on_abort_.push_back(std::move(fn));
        return;
      }
    }
    fn();
  }

  void abort() override {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard lock(mu_);
      if (done_ || aborted_) return;
      aborted_ = true;
      fns.swap(on_abort_);
    }
    for (auto& fn : fns) {
      try {
        fn();
      } catch (const std::exception& e) {
        log::error("connection {}: {}", id_, e.what());
      }
    }
  }

 private:
  // The first completion wins; the abort callbacks are dropped then (they hold what the
  // handler needed to cancel, which may hold this exchange).
  bool claim() {
    std::vector<std::function<void()>> dropped;
    std::lock_guard lock(mu_);
    if (done_ || aborted_) return false;
    done_ = true;
    dropped.swap(on_abort_);
    return true;
  }

  void post(HttpResponse r) {
    inbox_->post(
        [s = server_, id = id_, r = std::move(r)]() mutable { s->deliver(id, std::move(r)); });
  }

  EventServer* const server_;
  const uint64_t id_;
  const std::shared_ptr<LoopInbox> inbox_;
  const std::shared_ptr<WorkerPool> pool_;
  std::mutex mu_;
  bool done_ = false;
  bool aborted_ = false;
  std::vector<std::function<void()>> on_abort_;
};

EventServer::EventServer(EventServerOptions options, Router router)
    : options_(std::move(options)),
      router_(std::move(router)),
      pool_(std::make_shared<WorkerPool>(options_.worker_threads)) {}

EventServer::~EventServer() {
  pool_->stop();  // first: workers may use this object until they are joined
  conns_.clear();
  close_listener();
}

int EventServer::bind() {
  // Each connection is a descriptor: raise the soft limit as far as allowed, and keep the cap
  // within it so that accept() never fails for want of descriptors.
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &lim);
    ::getrlimit(RLIMIT_NOFILE, &lim);
  }
  const rlim_t usable = lim.rlim_cur > kSpareDescriptors + kMaxRefusing
                            ? lim.rlim_cur - kSpareDescriptors - kMaxRefusing
                            : 1;
  if (static_cast<rlim_t>(options_.limits.max_connections) > usable) {
    log::warn("the file descriptor limit ({}) allows only {} connections, not {}", lim.rlim_cur,
              usable, options_.limits.max_connections);
    options_.limits.max_connections = static_cast<int>(usable);
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(options_.port);
  const int gai = ::getaddrinfo(options_.host.c_str(), port.c_str(), &hints, &found);
  LSERVE_CHECK(gai == 0, "cannot listen on {}:{} ({})", options_.host, options_.port,
               ::gai_strerror(gai));
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    // SO_REUSEADDR only, so that a restart is not refused while old connections linger in
    // TIME_WAIT; never SO_REUSEPORT, which would let a second server share the port.
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::listen(fd, options_.limits.listen_backlog) == 0) {
      listen_fd_ = fd;
    } else {
      why = std::strerror(errno);
      ::close(fd);
    }
  }
  ::freeaddrinfo(found);
  LSERVE_CHECK(listen_fd_ >= 0, "cannot listen on {}:{} ({})", options_.host, options_.port, why);
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  const int bound =
      ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                       : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  loop_.add(listen_fd_, kListenKey, EPOLLIN);
  return bound;
}

void EventServer::run() {
  loop_.run([this](uint64_t key, uint32_t events) { on_event(key, events); }, kTick,
            [this] { on_tick(); });
  conns_.clear();
  close_listener();
  pool_->stop();
}

void EventServer::stop(std::chrono::milliseconds grace) {
  const auto deadline = Clock::now() + grace;
  loop_.inbox()->post([this, deadline] { begin_stop(deadline); });
}

void EventServer::begin_stop(Clock::time_point deadline) {
  if (stopping_) return;
  stopping_ = true;
  stop_deadline_ = deadline;
  close_listener();
  std::vector<uint64_t> ids;
  for (auto& [id, slot] : conns_) ids.push_back(id);
  for (uint64_t id : ids) {
    conns_.at(id).conn->on_server_stop();
    settle(id);
  }
  if (conns_.empty()) loop_.stop();
}

void EventServer::close_listener() {
  if (listen_fd_ < 0) return;
  loop_.remove(listen_fd_);
  ::close(listen_fd_);
  listen_fd_ = -1;
}

// --- events --------------------------------------------------------------------------------------

void EventServer::on_event(uint64_t key, uint32_t events) {
  if (key == kListenKey) {
    accept_all();
    return;
  }
  on_connection(key, [events](Connection& c) { c.on_event(events); });
}

void EventServer::accept_all() {
  const auto now = Clock::now();
  // Bounded per wake-up, so a connection flood cannot starve the connections already open.
  for (int i = 0; i < 256 && listen_fd_ >= 0; ++i) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        // Out of descriptors or memory: stop accepting for a moment rather than spin on a
        // listening socket that stays readable.
        log::warn("accept: {}; pausing new connections for {} ms", std::strerror(errno),
                  kTick.count() * 2);
        loop_.remove(listen_fd_);
        accept_paused_ = true;
        accept_resume_ = now + kTick * 2;
      }
      return;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    const bool over_cap = open_ >= options_.limits.max_connections;
    if (over_cap && refusing_ >= kMaxRefusing) {
      ::close(fd);
      continue;
    }
    const uint64_t id = next_id_++;
    ConnectionHost& host = *this;
    Slot slot{std::make_unique<Connection>(fd, id, host, now), 0, over_cap};
    if (over_cap) {
      HttpResponse r = error_response(
          503, fmt::format("the server has {} open connections, its limit; retry shortly",
                           options_.limits.max_connections));
      r.headers.add("Retry-After", "1");
      slot.conn->refuse(r);
      ++refusing_;
    } else {
      ++open_;
    }
    slot.events = slot.conn->wanted_events();
    try {
      loop_.add(fd, id, slot.events);
    } catch (const std::exception& e) {
      log::warn("connection {}: {}; closing it", id, e.what());
      --(over_cap ? refusing_ : open_);
      continue;  // the slot's connection closes the socket
    }
    conns_.emplace(id, std::move(slot));
    settle(id);
  }
}

void EventServer::on_tick() {
  const auto now = Clock::now();
  if (accept_paused_ && now >= accept_resume_ && listen_fd_ >= 0) {
    try {
      loop_.add(listen_fd_, kListenKey, EPOLLIN);
      accept_paused_ = false;
    } catch (const std::exception& e) {
      log::warn("{}; new connections stay paused", e.what());
      accept_resume_ = now + kTick * 2;
    }
  }
  std::vector<uint64_t> ids;
  ids.reserve(conns_.size());
  for (auto& [id, slot] : conns_) ids.push_back(id);
  for (uint64_t id : ids) {
    on_connection(id, [&](Connection& c) {
      if (stopping_ && now >= stop_deadline_) c.drop();
      c.on_tick(now);
    });
  }
  if (options_.on_tick) {
    try {
      options_.on_tick();
    } catch (const std::exception& e) {
      log::error("periodic task: {}", e.what());
    }
  }
  if (stopping_ && conns_.empty()) loop_.stop();
}

void EventServer::settle(uint64_t id) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Slot& slot = it->second;
  if (slot.conn->closed()) {
    loop_.remove(slot.conn->fd());
    --(slot.refused ? refusing_ : open_);
    conns_.erase(it);  // closes the socket
    if (stopping_ && conns_.empty()) loop_.stop();
    return;
  }
  const uint32_t events = slot.conn->wanted_events();
  if (events != slot.events) {
    loop_.modify(slot.conn->fd(), id, events);
    slot.events = events;
  }
}

void EventServer::on_connection(uint64_t id, const std::function<void(Connection&)>& fn) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) return;
  // An exception here (out of memory, a failing system call) would end the loop thread and with
  // it the server: it costs only this connection.
  try {
    fn(*it->second.conn);
  } catch (const std::exception& e) {
    log::error("connection {}: {}; closing it", id, e.what());
    it->second.conn->drop();
  }
  settle(id);
}

void EventServer::deliver(uint64_t id, HttpResponse response) {
  on_connection(id, [&](Connection& c) { c.on_response(std::move(response)); });
}

void EventServer::deliver_stream(uint64_t id, HttpResponse head, std::shared_ptr<BodySource> body) {
  const auto it = conns_.find(id);
  if (it == conns_.end()) {
    body->abort();  // the client left while the request was being prepared
    return;
  }
  on_connection(id, [&](Connection& c) { c.on_stream(std::move(head), std::move(body)); });
}

void EventServer::wake(uint64_t id) {
  on_connection(id, [](Connection& c) { c.on_wake(); });
}

// --- ConnectionHost ------------------------------------------------------------------------------

HttpResponse EventServer::error_response(int status, const std::string& message) {
  if (options_.error_response) return options_.error_response(status, message);
  return HttpResponse::text(status, message + "\n", "text/plain");
}

HttpResponse EventServer::internal_error(const std::exception& e) {
  return error_response(500, fmt::format("internal error: {}", e.what()));
}

std::optional<HttpResponse> EventServer::admit(const HttpRequest& head) {
  return options_.admit ? options_.admit(head) : std::nullopt;
}

bool EventServer::keep_alive_allowed() { return !options_.keep_alive || options_.keep_alive(); }

bool EventServer::reserve_body(size_t bytes) {
  size_t used = body_bytes_.load();
  do {
    if (used + bytes > options_.limits.max_buffered_body_bytes) return false;
  } while (!body_bytes_.compare_exchange_weak(used, used + bytes));
  return true;
}

void EventServer::release_body(size_t bytes) { body_bytes_.fetch_sub(bytes); }

std::shared_ptr<ConnectionExchange> EventServer::new_exchange(uint64_t connection_id) {
  return std::make_shared<LoopExchange>(this, connection_id);
}

std::function<void()> EventServer::waker(uint64_t connection_id) {
  return [inbox = loop_.inbox(), this, connection_id] {
    inbox->post([this, connection_id] { wake(connection_id); });
  };
}

void EventServer::handle(const Route& route, HttpRequest request,
                         std::shared_ptr<ConnectionExchange> exchange, size_t reserved) {
  auto task = [this, &route, request = std::move(request), exchange, reserved]() mutable {
    try {
      route.handler(request, exchange);
    } catch (const std::exception& e) {
      log::error("{} {}: {}", request.method, request.path, e.what());
      exchange->respond(internal_error(e));
    }
    const size_t body_bytes = request.body.capacity();
    std::string().swap(request.body);  // freed before its budget is given back
    release_body(reserved);
    // A large body is freed into the arena of the loop thread that received it, where glibc
    // keeps it resident; give such pages back, so that hostile uploads leave no lasting RSS.
    // At most once a second: a trim walks every arena under its lock, and clients could
    // otherwise trigger it at network speed.
    if (body_bytes >= kTrimAfterBodyBytes) {
      const int64_t now_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
              .count();
      int64_t last = last_trim_ms_.load();
      if (now_ms - last >= 1000 && last_trim_ms_.compare_exchange_strong(last, now_ms)) {
        ::malloc_trim(0);
      }
    }
  };
  if (route.on_loop) {
    task();
  } else if (!pool_->post(std::move(task))) {
    release_body(reserved);
  }
}

}  // namespace lserve::server
