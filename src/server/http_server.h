// The OpenAI-compatible HTTP front end: routes, authentication, limits and error bodies, served by
// the event-driven HTTP/1.1 server of event_server.h, which stays behind this interface; its loop
// also writes the periodic throughput line (stats_log.h).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "server/server_context.h"

namespace lserve::server {

class HttpServer {
 public:
  explicit HttpServer(ServerContext& ctx);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds ctx.config.host:port and returns the port (a free one for port 0); Error if it cannot.
  int bind();
  // Runs the event loop on the calling thread until stop() has taken effect.
  void listen();
  // Thread-safe, returns at once: stops accepting and closes every connection that has no request
  // under way; answers under way (streams to their end) get at most `grace` to be written, then
  // listen() returns. Stop the engine loop first so that every stream has its end.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lserve::server
