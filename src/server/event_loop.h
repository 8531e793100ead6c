// A single-threaded epoll loop: file descriptors are registered under a 64-bit key (never a
// pointer, so an event for a connection closed earlier in the same batch finds nothing rather
// than freed memory), other threads post tasks to it, and a periodic tick drives deadlines.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace lserve::server {

// The thread-safe way into a loop: post() runs a task on the loop's thread. Shared, so that
// threads that outlive the loop (the engine's) can still post; once the loop is gone their tasks
// are dropped.
class LoopInbox {
 public:
  explicit LoopInbox(int wake_fd) : wake_fd_(wake_fd) {}
  ~LoopInbox();
  LoopInbox(const LoopInbox&) = delete;
  LoopInbox& operator=(const LoopInbox&) = delete;

  // False when the loop is gone and the task was dropped.
  bool post(std::function<void()> task);
  // Loop thread: the tasks posted so far.
  std::vector<std::function<void()>> take();
  void close();

 private:
  const int wake_fd_;
  std::mutex mu_;
  std::vector<std::function<void()>> tasks_;
  bool closed_ = false;
};

class EventLoop {
 public:
  using EventFn = std::function<void(uint64_t key, uint32_t events)>;
  static constexpr uint64_t kWakeKey = 0;  // reserved

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Level-triggered registrations; `key` is what run()'s callback gets.
  void add(int fd, uint64_t key, uint32_t events);
  void modify(int fd, uint64_t key, uint32_t events);
  void remove(int fd);

  const std::shared_ptr<LoopInbox>& inbox() const { return inbox_; }

  // Dispatches events and posted tasks, and calls `tick` every `period`, until stop().
  void run(const EventFn& on_event, std::chrono::milliseconds period,
           const std::function<void()>& tick);
  // Loop thread (or before run): run() returns after the current iteration.
  void stop() { stop_ = true; }

 private:
  int epoll_fd_ = -1;
  std::shared_ptr<LoopInbox> inbox_;
  bool stop_ = false;
};

}  // namespace lserve::server
