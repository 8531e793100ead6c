#include "server/connection.h"

#include <fmt/format.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "core/log.h"

namespace lserve::server {
namespace {

// How long a closing connection waits for the client's FIN after ours, reading and discarding:
// closing with unread input would send a reset, and the client could lose the answer.
constexpr std::chrono::milliseconds kLinger{2000};
constexpr size_t kReadChunk = 64u << 10;
// A body's share of the server-wide body budget grows in steps of this size as its bytes arrive:
// small, so that connections announcing large bodies and sending nothing hold little of it
// (4,096 connections x 64 KiB = 256 MiB of the default 1 GiB).
constexpr size_t kBodyBudgetStep = 64u << 10;
// Written output is cut from the front of the buffer once this much has been sent, so a stream
// whose client keeps up holds only what is unsent.
constexpr size_t kCompactAfterBytes = 64u << 10;
constexpr const char* kTooManyBodies =
    "the server is receiving too many request bodies at once; retry shortly";

std::string response_head(const HttpResponse& r, const HttpHeaders& extra, int minor_version,
                          bool keep_alive, const std::string& framing) {
  std::string out =
      fmt::format("HTTP/1.{} {} {}\r\n", minor_version, r.status, reason_phrase(r.status));
  if (!r.content_type.empty()) out += fmt::format("Content-Type: {}\r\n", r.content_type);
  out += framing;
  for (const HttpHeaders* headers : {&r.headers, &extra}) {
    for (const auto& [name, value] : headers->fields()) {
      out += fmt::format("{}: {}\r\n", name, value);
    }
  }
  if (!keep_alive) {
    out += "Connection: close\r\n";
  } else if (minor_version == 0) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  return out;
}

}  // namespace

Connection::Connection(int fd, uint64_t id, ConnectionHost& host, Clock::time_point now)
    : fd_(fd), id_(id), host_(host), limits_(host.limits()), now_(now), parser_(host.limits()) {
  // A fresh connection gets the header deadline from the start: it has nothing else to do.
  deadline_ = now + limits_.header_timeout;
  last_progress_ = last_output_ = now;
}

Connection::~Connection() {
  abort_exchange();
  if (body_reserved_ > 0) host_.release_body(body_reserved_);
  ::close(fd_);
}

uint32_t Connection::wanted_events() const {
  if (state_ == State::kClosed) return 0;
  uint32_t events = EPOLLRDHUP;
  if (!read_paused_) events |= EPOLLIN;
  if (out_pos_ < out_.size()) events |= EPOLLOUT;
  return events;
}

void Connection::refuse(const HttpResponse& response) { write_response(response, /*close=*/true); }

// --- reading -----------------------------------------------------------------------------------

void Connection::on_event(uint32_t events) {
  now_ = Clock::now();
  if (events & EPOLLERR) {
    drop();
    return;
  }
  if (events & EPOLLOUT) flush();
  if (state_ != State::kClosed && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) {
    if (read_paused_) {
      // Not reading (pipelined input at its cap) but the client hung up: it is gone.
      if (events & (EPOLLRDHUP | EPOLLHUP)) drop();
    } else {
      on_readable();
    }
  }
}

void Connection::on_readable() {
  char buf[kReadChunk];
  // Bounded per event, so that one fast client cannot starve the others.
  for (int round = 0; round < 16 && state_ != State::kClosed && !read_paused_; ++round) {
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      take(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n < 0 && errno == EINTR) continue;
    // EOF or an error. Half-closed clients are treated as gone, as most servers do: a client
    // that shuts its side while waiting for an answer has almost always vanished.
    if (state_ == State::kHandling || state_ == State::kStreaming) {
      log::debug("connection {}: client left before its answer was complete", id_);
    }
    drop();
    return;
  }
}

void Connection::take(const char* data, size_t n) {
  // Closing: the last answer is out, what the client still sends is discarded.
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  if (state_ == State::kBody && head_.framing == BodyFraming::kLength && in_.empty()) {
    // The common case goes straight into the body: no second copy of a large upload.
    std::string& body = head_.request.body;
    const size_t want = std::min<uint64_t>(n, head_.content_length - body.size());
    body.append(data, want);
    data += want;
    n -= want;
  }
  in_.append(data, n);
  const bool busy =
      state_ == State::kHandling || state_ == State::kStreaming || state_ == State::kResponding;
  // Pipelined requests wait while one is answered; only a head's worth of them is buffered.
  if (busy && in_.size() >= limits_.max_header_bytes) read_paused_ = true;
  advance();
}

void Connection::advance() {
  if (advancing_) {
    advance_again_ = true;
    return;
  }
  advancing_ = true;
  do {
    advance_again_ = false;
    advance_once();
  } while (advance_again_);
  advancing_ = false;
}

void Connection::advance_once() {
  for (;;) {
    if (state_ == State::kIdle) {
      // A client may send CRLF after a body (RFC 9112, section 2.2): not the start of a request.
      const size_t start = in_.find_first_not_of("\r\n");
      in_.erase(0, start == std::string::npos ? in_.size() : start);
      if (in_.empty()) return;
      state_ = State::kHead;
      deadline_ = now_ + limits_.header_timeout;  // whole head, from its first byte
    }
    if (state_ == State::kHead) {
      const ParseStatus s = parser_.parse(in_, head_);
      if (s == ParseStatus::kIncomplete) return;
      if (s == ParseStatus::kError) {
        answer_error(parser_.error().status, parser_.error().message);
        return;
      }
      in_.erase(0, parser_.head_bytes());
      on_head();
      continue;
    }
    if (state_ == State::kBody) {
      if (!consume_body()) return;
      dispatch();
    }
    return;
  }
}

void Connection::on_head() {
  HttpRequest& req = head_.request;
  head_only_ = req.method == "HEAD";
  minor_version_ = req.minor_version;
  const CorsPolicy& cors = host_.cors();
  add_cors_headers(cors, req, extra_headers_);
  Router::Match m = host_.router().match(req.method, req.path);
  if (cors.enabled() && m.route == nullptr && m.status == 405) {
    // Every path takes OPTIONS, unauthenticated: browsers send preflights without credentials.
    if (req.method == "OPTIONS") {
      answer_early(options_response(cors, req, m.allow));
      return;
    }
    m.allow += ", OPTIONS";
  }
  if (std::optional<HttpResponse> refused = host_.admit(req)) {
    answer_early(std::move(*refused));
    return;
  }
  if (m.route == nullptr) {
    HttpResponse r = host_.error_response(
        m.status, m.status == 404 ? "no such endpoint"
                                  : fmt::format("{} does not take {} (allowed: {})", req.path,
                                                req.method, m.allow));
    if (m.status == 405) r.headers.add("Allow", m.allow);
    answer_early(std::move(r));
    return;
  }
  route_ = m.route;
  if (head_.framing == BodyFraming::kLength && head_.content_length > route_->max_body_bytes) {
    answer_early(host_.error_response(
        413, fmt::format("the request body is larger than {} bytes", route_->max_body_bytes)));
    return;
  }
  // The budget counts bytes received (in steps), not bytes announced: announcing a large body
  // and sending nothing costs the server nothing.
  const size_t declared = head_.framing == BodyFraming::kLength ? head_.content_length : 0;
  const size_t reserve = head_.framing == BodyFraming::kChunked
                             ? kBodyBudgetStep
                             : std::min<size_t>(declared, kBodyBudgetStep);
  if (!host_.reserve_body(reserve)) {
    answer_early(too_many_bodies());
    return;
  }
  body_reserved_ = reserve;
  if (head_.framing == BodyFraming::kNone) {
    dispatch();
    return;
  }
  state_ = State::kBody;
  deadline_ = now_ + limits_.body_timeout;  // the whole body, not per byte
  if (head_.framing == BodyFraming::kLength) {
    req.body.reserve(std::min<size_t>(declared, kBodyBudgetStep));  // grows as bytes arrive
  } else {
    chunked_.emplace(route_->max_body_bytes);
  }
  if (head_.expect_continue && in_.empty()) {
    append("HTTP/1.1 100 Continue\r\n\r\n");
    flush();
  }
}

// Moves body bytes from in_; true once the body is complete.
bool Connection::consume_body() {
  std::string& body = head_.request.body;
  ParseStatus s = ParseStatus::kIncomplete;
  if (head_.framing == BodyFraming::kLength) {
    const size_t want = std::min<uint64_t>(in_.size(), head_.content_length - body.size());
    body.append(in_, 0, want);
    in_.erase(0, want);
    if (body.size() == head_.content_length) s = ParseStatus::kDone;
  } else {
    size_t used = 0;
    s = chunked_->feed(in_, body, used);
    in_.erase(0, used);
    if (s == ParseStatus::kError) {
      answer_error(chunked_->error().status, chunked_->error().message);
      return false;
    }
  }
  if (body.size() > body_reserved_) {
    const size_t more = std::max(kBodyBudgetStep, body.size() - body_reserved_);
    if (!host_.reserve_body(more)) {
      HttpResponse r = too_many_bodies();
      r.close = true;  // the rest of the body will not be read
      keep_alive_ = false;
      write_response(r, /*close=*/true);
      return false;
    }
    body_reserved_ += more;
  }
  return s == ParseStatus::kDone;
}

void Connection::dispatch() {
  state_ = State::kHandling;
  keep_alive_ = head_.keep_alive;
  chunked_.reset();
  exchange_ = host_.new_exchange(id_);
  const size_t reserved = body_reserved_;
  body_reserved_ = 0;  // the handler's now, released when it returns
  host_.handle(*route_, std::move(head_.request), exchange_, reserved);
}

// --- answering ---------------------------------------------------------------------------------

void Connection::answer_early(HttpResponse response) {
  bool close = response.close;
  if (head_.framing == BodyFraming::kLength && in_.size() >= head_.content_length) {
    in_.erase(0, head_.content_length);  // the body is here already: skip it, keep the connection
  } else if (head_.framing != BodyFraming::kNone) {
    close = true;  // the body is still coming and will not be read
  }
  keep_alive_ = head_.keep_alive;
  write_response(response, close);
}

HttpResponse Connection::too_many_bodies() {
  HttpResponse r = host_.error_response(503, kTooManyBodies);
  r.headers.add("Retry-After", "1");
  return r;
}

void Connection::answer_error(int status, const std::string& message) {
  keep_alive_ = false;
  HttpResponse r = host_.error_response(status, message);
  write_response(r, /*close=*/true);
}

bool Connection::keep_alive_after(bool response_allows) const {
  return keep_alive_ && response_allows && !server_stopping_ && host_.keep_alive_allowed();
}

void Connection::answered() {
  state_ = keep_alive_ ? State::kResponding : State::kClosing;
  if (state_ == State::kClosing) begin_close();
}

void Connection::write_response(const HttpResponse& r, bool close) {
  const int minor = minor_version_;
  keep_alive_ = keep_alive_after(!close && !r.close);
  // A 204 has no body and, by RFC 9110, no Content-Length either.
  const std::string framing =
      r.status == 204 ? "" : fmt::format("Content-Length: {}\r\n", r.body.size());
  append(response_head(r, extra_headers_, minor, keep_alive_, framing));
  if (!head_only_) append(r.body);
  answered();
  if (body_reserved_ > 0) {
    host_.release_body(body_reserved_);
    body_reserved_ = 0;
  }
  exchange_.reset();
  flush();
}

void Connection::on_response(HttpResponse response) {
  if (state_ != State::kHandling) return;
  now_ = Clock::now();
  write_response(response, false);
}

void Connection::on_stream(HttpResponse head, std::shared_ptr<BodySource> body) {
  if (state_ != State::kHandling) {
    body->abort();
    return;
  }
  now_ = Clock::now();
  const int minor = minor_version_;
  // HTTP/1.0 has no chunked encoding: the body ends where the connection does.
  chunked_out_ = minor == 1;
  keep_alive_ = keep_alive_after(chunked_out_ && !head.close);
  append(response_head(head, extra_headers_, minor, keep_alive_,
                       chunked_out_ ? "Transfer-Encoding: chunked\r\n" : ""));
  if (head_only_) {
    body->abort();
    answered();
    exchange_.reset();
    flush();
    return;
  }
  state_ = State::kStreaming;
  stream_ = std::move(body);
  last_output_ = now_;
  exchange_.reset();  // complete: from now on the stream's abort() is what cancels
  stream_->start(host_.waker(id_));
  pull(false);
}

void Connection::on_wake() {
  if (state_ != State::kStreaming) return;
  now_ = Clock::now();
  pull(false);
}

void Connection::pull(bool idle) {
  if (out_.size() - out_pos_ >= limits_.max_stream_buffer_bytes) {
    pull_wanted_ = true;  // the client reads slowly: the output waits in the source
    return;
  }
  pull_wanted_ = false;
  std::string data;
  bool done = false;
  try {
    done = stream_->pull(data, idle);
  } catch (const std::exception& e) {
    log::error("connection {}: stream failed: {}", id_, e.what());
    drop();
    return;
  }
  if (!data.empty()) {
    if (chunked_out_) append(fmt::format("{:x}\r\n", data.size()));
    append(data);
    if (chunked_out_) append("\r\n");
    last_output_ = now_;
  }
  if (done) {
    stream_.reset();
    if (chunked_out_) append("0\r\n\r\n");
    keep_alive_ = keep_alive_after(true);
    answered();
  }
  flush();
}

void Connection::append(std::string_view data) {
  // The write deadline runs from when there is something to write, not from the last write.
  if (out_pos_ == out_.size()) last_progress_ = now_;
  out_ += data;
}

void Connection::flush() {
  while (out_pos_ < out_.size()) {
    const ssize_t n = ::send(fd_, out_.data() + out_pos_, out_.size() - out_pos_, MSG_NOSIGNAL);
    if (n > 0) {
      out_pos_ += static_cast<size_t>(n);
      last_progress_ = now_;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {  // EPOLLOUT will say when
      if (out_pos_ >= kCompactAfterBytes) {
        out_.erase(0, out_pos_);
        out_pos_ = 0;
      }
      return;
    }
    drop();  // the client is gone
    return;
  }
  out_.clear();
  out_pos_ = 0;
  last_progress_ = now_;
  on_flushed();
}

void Connection::on_flushed() {
  switch (state_) {
    case State::kResponding:
      next_request();
      break;
    case State::kStreaming:
      if (pull_wanted_) pull(false);
      break;
    case State::kClosing:
      if (!fin_sent_) {
        ::shutdown(fd_, SHUT_WR);
        fin_sent_ = true;
        deadline_ = now_ + kLinger;  // from the FIN: writing the answer may take longer
      }
      if (server_stopping_) close_now();
      break;
    default:
      break;
  }
}

void Connection::next_request() {
  if (server_stopping_) {
    state_ = State::kClosing;
    begin_close();
    on_flushed();
    return;
  }
  state_ = State::kIdle;
  deadline_ = now_ + limits_.keep_alive_timeout;
  parser_.reset();
  head_ = RequestHead();
  extra_headers_ = HttpHeaders();
  route_ = nullptr;
  minor_version_ = 1;
  head_only_ = false;
  keep_alive_ = true;
  if (read_paused_) {
    read_paused_ = false;
    on_readable();  // what waited in the socket
  }
  if (state_ == State::kIdle) advance();  // a pipelined request already here
}

void Connection::begin_close() {
  read_paused_ = false;
  in_.clear();
  std::string().swap(head_.request.body);  // a body cut short by an error: freed now
}

// --- time and teardown ---------------------------------------------------------------------------

void Connection::on_tick(Clock::time_point now) {
  now_ = now;
  if (out_pos_ < out_.size() && now - last_progress_ > limits_.write_timeout) {
    log::debug("connection {}: the client stopped reading; closing", id_);
    drop();
    return;
  }
  switch (state_) {
    case State::kIdle:
      if (now >= deadline_) drop();
      break;
    case State::kClosing:
      // Until the FIN is sent the answer is still being written: write_timeout above applies.
      if (fin_sent_ && now >= deadline_) drop();
      break;
    case State::kHead:
    case State::kBody:
      if (now >= deadline_) {
        answer_error(408, state_ == State::kHead ? "the request headers took too long to arrive"
                                                 : "the request body took too long to arrive");
      }
      break;
    case State::kStreaming:
      if (now - last_output_ >= stream_->heartbeat()) pull(true);
      break;
    default:
      break;
  }
}

void Connection::on_server_stop() {
  server_stopping_ = true;
  switch (state_) {
    case State::kIdle:
    case State::kHead:
    case State::kBody:
      drop();  // no request accepted yet: nothing is lost
      break;
    case State::kClosing:
      if (out_pos_ == out_.size()) close_now();
      break;
    default:
      break;  // the answer under way closes the connection when it is written
  }
}

void Connection::close_now() {
  // The answer is written and the FIN sent: with nothing left unread, closing sends no reset
  // and the client still reads everything, so a stopping server need not linger.
  char buf[kReadChunk];
  for (int round = 0; round < 16; ++round) {
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), MSG_DONTWAIT);
    if (n <= 0) break;
  }
  drop();
}

void Connection::abort_exchange() {
  if (stream_) {
    std::shared_ptr<BodySource> s = std::move(stream_);
    try {
      s->abort();
    } catch (const std::exception& e) {
      log::error("connection {}: {}", id_, e.what());
    }
  }
  if (exchange_) {
    std::shared_ptr<ConnectionExchange> ex = std::move(exchange_);
    ex->abort();
  }
}

void Connection::drop() {
  if (state_ == State::kClosed) return;
  state_ = State::kClosed;
  abort_exchange();
  if (body_reserved_ > 0) {
    host_.release_body(body_reserved_);
    body_reserved_ = 0;
  }
}

}  // namespace lserve::server
