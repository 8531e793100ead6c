// Incremental parsing of HTTP/1.1 requests with limits: the head (request line and header fields)
// and chunked bodies. Pure functions of the bytes received so far, so they are tested without
// sockets (tests/unit/test_http_parser.cpp). Every malformed or oversized input is an error with
// the status to answer; nothing is allocated beyond the limits.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "server/http_limits.h"
#include "server/http_message.h"

namespace lserve::server {

struct ParseError {
  int status = 0;  // 400, 413, 414, 417, 431, 501 or 505
  std::string message;
};

enum class ParseStatus { kIncomplete, kDone, kError };

enum class BodyFraming { kNone, kLength, kChunked };

// A parsed request head and what it says about the rest of the exchange.
struct RequestHead {
  HttpRequest request;  // everything but the body
  BodyFraming framing = BodyFraming::kNone;
  uint64_t content_length = 0;  // with kLength
  bool keep_alive = true;       // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only if asked
  bool expect_continue = false;
};

class HeadParser {
 public:
  explicit HeadParser(const HttpLimits& limits) : limits_(limits) {}

  // `buf` holds every byte received since the request began (it only grows between calls);
  // only the bytes new since the last call are scanned for the end of the head. Limits are
  // checked on incomplete heads too, so an oversized head is refused as soon as it is.
  ParseStatus parse(std::string_view buf, RequestHead& out);
  // After kDone: how many bytes of `buf` the head took (what follows is the body).
  size_t head_bytes() const { return head_bytes_; }
  const ParseError& error() const { return error_; }
  void reset();

 private:
  ParseStatus fail(int status, std::string message);
  ParseStatus check_request_line(std::string_view line, bool complete, RequestHead* out);
  ParseStatus parse_fields(std::string_view fields, RequestHead& out);
  ParseStatus finish(RequestHead& out);

  const HttpLimits& limits_;
  size_t start_ = 0;    // first byte of the request line (empty lines before it are skipped)
  size_t scanned_ = 0;  // bytes already searched for the blank line that ends the head
  size_t head_bytes_ = 0;
  ParseError error_;
};

// Decodes a `Transfer-Encoding: chunked` body as its bytes arrive.
class ChunkedDecoder {
 public:
  explicit ChunkedDecoder(size_t max_body) : max_body_(max_body) {}

  // Consumes bytes of `in` (`used` says how many), appending chunk data to `body`. kDone once
  // the last chunk and the trailer section are in; bytes after them are not consumed.
  ParseStatus feed(std::string_view in, std::string& body, size_t& used);
  const ParseError& error() const { return error_; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  ParseStatus fail(int status, std::string message);
  // Takes one line into line_; false while it is incomplete.
  bool take_line(std::string_view in, size_t& pos, bool& too_long);
  ParseStatus on_size_line(std::string& body);

  size_t max_body_;
  State state_ = State::kSize;
  uint64_t remaining_ = 0;
  std::string line_;
  size_t trailer_bytes_ = 0;
  ParseError error_;
};

// Decodes %XX escapes; false for a malformed escape or a decoded NUL.
bool percent_decode(std::string_view in, std::string& out);

}  // namespace lserve::server
