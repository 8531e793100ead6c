#include "server/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/log.h"

namespace lserve::server {

LoopInbox::~LoopInbox() { ::close(wake_fd_); }

bool LoopInbox::post(std::function<void()> task) {
  bool first = false;
  {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    first = tasks_.empty();
    tasks_.push_back(std::move(task));
  }
  // One wake-up per batch: the loop takes every queued task when it wakes.
  if (first) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof(one));
  }
  return true;
}

std::vector<std::function<void()>> LoopInbox::take() {
  uint64_t count = 0;
  [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &count, sizeof(count));
  std::vector<std::function<void()>> out;
  std::lock_guard lock(mu_);
  out.swap(tasks_);
  return out;
}

void LoopInbox::close() {
  std::vector<std::function<void()>> dropped;
  std::lock_guard lock(mu_);
  closed_ = true;
  dropped.swap(tasks_);
}

EventLoop::EventLoop() {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  LSERVE_CHECK(epoll_fd_ >= 0, "epoll_create1: {}", std::strerror(errno));
  const int wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  LSERVE_CHECK(wake_fd >= 0, "eventfd: {}", std::strerror(errno));
  inbox_ = std::make_shared<LoopInbox>(wake_fd);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd, &ev);
}

EventLoop::~EventLoop() {
  inbox_->close();
  ::close(epoll_fd_);
}

void EventLoop::add(int fd, uint64_t key, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  LSERVE_CHECK(::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0, "epoll_ctl add: {}",
               std::strerror(errno));
}

void EventLoop::modify(int fd, uint64_t key, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::remove(int fd) { ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); }

void EventLoop::run(const EventFn& on_event, std::chrono::milliseconds period,
                    const std::function<void()>& tick) {
  using Clock = std::chrono::steady_clock;
  constexpr int kBatch = 256;
  epoll_event events[kBatch];
  auto next_tick = Clock::now() + period;
  while (!stop_) {
    const auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(next_tick - Clock::now());
    const int n = ::epoll_wait(epoll_fd_, events, kBatch,
                               static_cast<int>(std::max<int64_t>(0, wait.count()) + 1));
    if (n < 0 && errno != EINTR) {
      log::error("epoll_wait: {}", std::strerror(errno));
      break;
    }
    for (int i = 0; i < n && !stop_; ++i) {
      if (events[i].data.u64 == kWakeKey) {
        for (auto& task : inbox_->take()) task();
      } else {
        on_event(events[i].data.u64, events[i].events);
      }
    }
    if (Clock::now() >= next_tick) {
      next_tick = Clock::now() + period;
      tick();
    }
  }
}

}  // namespace lserve::server
