// The OpenAI-compatible HTTP front end: routes, authentication, limits and error bodies. The
// HTTP library stays behind this interface so nothing else includes it.
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
  // Serves until stop(); returns after the worker threads finished their connections.
  void listen();
  // Thread-safe: waits (at most `grace`) for streamed responses to be written to the end, since
  // the HTTP library cuts streams short once stopped, then closes the listening socket;
  // listen() then returns. Stop the engine loop first so that every stream has its end.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lserve::server
