// The resource bounds of the HTTP layer. Every one is a whole-budget limit (a deadline is not
// pushed back by each byte that arrives), so no client, however slow or hostile, holds more than
// one connection slot, a bounded buffer and no thread.
#pragma once

#include <chrono>
#include <cstddef>

namespace lserve::server {

struct HttpLimits {
  // Open client connections; one more is answered 503 (OpenAI error body, Connection: close)
  // and closed. Also bounded by the process's file descriptor limit.
  int max_connections = 4096;
  // Connections the kernel queues before they are accepted.
  int listen_backlog = 1024;
  // From a request's first byte to the end of its headers (request line included): 408 after.
  std::chrono::milliseconds header_timeout{10'000};
  // From the end of the headers to the end of the body: 408 after.
  std::chrono::milliseconds body_timeout{60'000};
  // A kept-alive connection with no request in progress is closed after this.
  std::chrono::milliseconds keep_alive_timeout{5'000};
  // A response (or stream) the client stops reading: closed after this long without progress.
  std::chrono::milliseconds write_timeout{30'000};
  // Request line plus header fields: 431 beyond.
  size_t max_header_bytes = 32u << 10;
  // The request target: 414 beyond.
  size_t max_uri_bytes = 8u << 10;
  // Header fields per request: 431 beyond.
  int max_header_fields = 100;
  // Request bodies held at once (being received or handled) across all connections; a request
  // whose body would go beyond gets 503. Bounds memory however many clients upload at once.
  size_t max_buffered_body_bytes = size_t{1} << 30;
  // Streamed output waiting for a slow reader, per connection; beyond it the stream is not
  // polled (the engine's output is merged in the request's channel meanwhile).
  size_t max_stream_buffer_bytes = 1u << 20;
};

}  // namespace lserve::server
