// One client connection's HTTP/1.1 state machine, driven by the event loop: read a head (within
// its deadline), check it, read the body (within its deadline), hand the request to a handler,
// write the answer (whole or streamed), then wait for the next request or close. Every call is on
// the event-loop thread and returns without blocking.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "server/cors.h"
#include "server/exchange.h"
#include "server/http_limits.h"
#include "server/http_parser.h"
#include "server/router.h"

namespace lserve::server {

class ConnectionExchange;

// What a connection needs from the server that owns it.
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  virtual const HttpLimits& limits() const = 0;
  virtual const Router& router() const = 0;
  virtual const CorsPolicy& cors() const = 0;
  // An error answer in the API's format (the OpenAI error object).
  virtual HttpResponse error_response(int status, const std::string& message) = 0;
  // Checked on the head, before any body is read (authentication): a response refuses it.
  virtual std::optional<HttpResponse> admit(const HttpRequest& head) = 0;
  // False while the server drains: every response then closes its connection.
  virtual bool keep_alive_allowed() = 0;
  // The budget of request bodies held at once (HttpLimits::max_buffered_body_bytes).
  virtual bool reserve_body(size_t bytes) = 0;
  virtual void release_body(size_t bytes) = 0;
  virtual std::shared_ptr<ConnectionExchange> new_exchange(uint64_t connection_id) = 0;
  // What a streamed body calls, from any thread, to have on_wake() run on the loop.
  virtual std::function<void()> waker(uint64_t connection_id) = 0;
  // Runs the route's handler on the loop or a worker; the body budget `reserved` is released
  // when it returns.
  virtual void handle(const Route& route, HttpRequest request,
                      std::shared_ptr<ConnectionExchange> exchange, size_t reserved) = 0;
};

// The Exchange that a connection hands out; abort() is the connection's side.
class ConnectionExchange : public Exchange {
 public:
  // Loop thread: runs the on_abort callbacks unless the exchange completed.
  virtual void abort() = 0;
};

class Connection {
 public:
  using Clock = std::chrono::steady_clock;

  Connection(int fd, uint64_t id, ConnectionHost& host, Clock::time_point now);
  ~Connection();  // closes the socket
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Answers `response` (a refusal, e.g. too many connections) without reading a request, then
  // closes.
  void refuse(const HttpResponse& response);

  void on_event(uint32_t events);
  void on_tick(Clock::time_point now);
  // The exchange's outcome, posted to the loop by whichever thread produced it.
  void on_response(HttpResponse response);
  void on_stream(HttpResponse head, std::shared_ptr<BodySource> body);
  void on_wake();
  // The server stops: close now unless a response is under way; close after it.
  void on_server_stop();
  // Hard close (a deadline of the server's): whatever is under way is aborted.
  void drop();

  bool closed() const { return state_ == State::kClosed; }
  bool idle() const { return state_ == State::kIdle; }
  int fd() const { return fd_; }
  uint64_t id() const { return id_; }
  // The epoll events the connection needs now.
  uint32_t wanted_events() const;

 private:
  enum class State {
    kIdle,        // between requests: nothing of the next one yet
    kHead,        // reading a request head
    kBody,        // reading its body
    kHandling,    // a handler has the request; no answer yet
    kStreaming,   // the head of a streamed response is out; the body follows
    kResponding,  // writing the rest of a complete answer
    kClosing,     // the last answer written (or being written); waiting for the client's FIN
    kClosed,
  };

  void on_readable();
  void take(const char* data, size_t n);
  void advance();
  void advance_once();
  void on_head();
  bool consume_body();
  void dispatch();
  // Answers before the body was read; the connection closes unless the body is already here.
  void answer_early(HttpResponse response);
  // 503 with Retry-After: the server-wide budget for request bodies is spent.
  HttpResponse too_many_bodies();
  void answer_error(int status, const std::string& message);
  void write_response(const HttpResponse& response, bool close);
  void pull(bool idle);
  void append(std::string_view data);
  void flush();
  void on_flushed();
  void next_request();
  void begin_close();
  // Whether the connection stays open after the exchange being answered: the client asked for it
  // (keep_alive_), the response allows it, and the server is neither stopping nor draining.
  bool keep_alive_after(bool response_allows) const;
  // The whole answer is queued: wait for the next request, or close (keep_alive_ decides).
  void answered();
  void close_now();
  void abort_exchange();

  const int fd_;
  const uint64_t id_;
  ConnectionHost& host_;
  const HttpLimits& limits_;
  State state_ = State::kIdle;
  Clock::time_point now_;
  Clock::time_point deadline_;       // of kIdle, kHead, kBody and kClosing
  Clock::time_point last_progress_;  // a write made progress (or had nothing to do)
  Clock::time_point last_output_;    // a streamed response last produced bytes

  std::string in_;  // received, not yet parsed
  std::string out_;
  size_t out_pos_ = 0;
  HeadParser parser_;
  RequestHead head_;
  const Route* route_ = nullptr;
  std::optional<ChunkedDecoder> chunked_;
  size_t body_reserved_ = 0;
  // What every answer to the request being answered carries (CORS), decided from its head.
  HttpHeaders extra_headers_;
  int minor_version_ = 1;     // of the request being answered
  bool head_only_ = false;    // a HEAD request: the answer has no body
  bool keep_alive_ = true;    // of the exchange in progress
  bool chunked_out_ = false;  // the stream is sent with chunked encoding (HTTP/1.1)
  bool pull_wanted_ = false;  // a wake came while the output buffer was full
  bool read_paused_ = false;  // pipelined input is at its cap
  bool fin_sent_ = false;
  bool server_stopping_ = false;
  // advance() is re-entered when an answer written from inside it lets the next pipelined
  // request start; the outer call loops instead, so the stack does not grow per request.
  bool advancing_ = false;
  bool advance_again_ = false;

  std::shared_ptr<ConnectionExchange> exchange_;
  std::shared_ptr<BodySource> stream_;
};

}  // namespace lserve::server
