// The HTTP/1.1 request and response as handlers see them: plain data, no I/O. The event-driven
// server (event_server.h) fills requests from the socket and writes responses back.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lserve::server {

// ASCII case-insensitive equality (header names, tokens such as "chunked").
bool iequals(std::string_view a, std::string_view b);

// Header fields in arrival order; names compare case-insensitively.
class HttpHeaders {
 public:
  using Field = std::pair<std::string, std::string>;

  void add(std::string name, std::string value);
  // The first value of `name`, or nullptr.
  const std::string* find(std::string_view name) const;
  // The first value of `name`, or "".
  std::string get(std::string_view name) const;
  size_t count(std::string_view name) const;
  const std::vector<Field>& fields() const { return fields_; }

 private:
  std::vector<Field> fields_;
};

struct HttpRequest {
  std::string method;
  std::string target;     // as sent
  std::string path;       // percent-decoded, without the query
  std::string query;      // after '?', as sent
  int minor_version = 1;  // HTTP/1.x
  HttpHeaders headers;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type;  // none: no Content-Type header
  std::string body;
  // Content-Length, Transfer-Encoding and Connection are the server's: set `close` instead.
  HttpHeaders headers;
  bool close = false;  // close the connection once this response is written

  static HttpResponse text(int status, std::string body, std::string content_type);
};

// "OK", "Not Found", ...; "Unknown" for statuses the server never sends.
std::string_view reason_phrase(int status);

}  // namespace lserve::server
