// A few threads for the request work that takes milliseconds (JSON parsing, chat templates,
// tokenization, building long responses), so that the event loop never does it. Tasks never wait
// on a client or on the engine.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lserve::server {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  ~WorkerPool();  // stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Any thread. False (the task dropped) once stopped.
  bool post(std::function<void()> task);
  // Finishes the tasks running, drops the queued ones, joins the threads. Idempotent; not from a
  // task.
  void stop();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace lserve::server
