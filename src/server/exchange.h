// What a handler answers through. No handler ever waits for a client or for the engine: it
// completes its Exchange at once, hands it a BodySource that the event loop pulls from as output
// becomes ready (streams), or completes it later from whatever thread has the answer.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "server/http_message.h"

namespace lserve::server {

// The body of a streamed response, produced elsewhere (the engine thread) and written by the
// event loop. All calls but the `wake` function come from the event-loop thread; none may block.
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Once, before the first pull. `wake` may be called from any thread, any number of times, to
  // say that pull() has something new; calls are cheap and coalesced.
  virtual void start(std::function<void()> wake) = 0;
  // Appends the body bytes that are ready; `idle`: nothing was written for heartbeat(), so the
  // source may add a keep-alive. Returns true once the body is complete (its last bytes
  // appended). Nothing is appended while the client is slow to read: output waits in the source.
  virtual bool pull(std::string& out, bool idle) = 0;
  // The body will not be completed: the client went away, could not keep up, or the server
  // stopped. Called at most once, never after pull() returned true.
  virtual void abort() = 0;
  virtual std::chrono::milliseconds heartbeat() const = 0;
};

// One request's way back to its connection; thread-safe. Complete it exactly once with
// respond(), stream() or respond_later(); later calls are ignored. If the connection goes
// first (the client left, a deadline passed, the server stopped), the on_abort callbacks run and
// any later completion is dropped.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual void respond(HttpResponse response) = 0;
  // `head`'s status and headers are sent now, the body comes from `body`.
  virtual void stream(HttpResponse head, std::shared_ptr<BodySource> body) = 0;
  // Runs `build` on a worker thread and responds with its result: for a response that is
  // expensive to put together (a long one, with log-probabilities), off the event loop and off
  // the thread that calls this (the engine's). An exception from `build` is a 500.
  virtual void respond_later(std::function<HttpResponse()> build) = 0;
  // `fn` runs once if the exchange is aborted (on the event-loop thread); at once if it already
  // was. Dropped, without running, when the exchange completes.
  virtual void on_abort(std::function<void()> fn) = 0;
};

using Handler = std::function<void(HttpRequest& request, const std::shared_ptr<Exchange>& ex)>;

}  // namespace lserve::server
