// Streams a request's output as server-sent events (`data: {chunk}\n\n` ... `data: [DONE]\n\n`).
// With n > 1 choices, each chunk carries its choice's index; [DONE] follows the last choice.
// A write that fails means the client went away: the request is cancelled at once, which frees
// its KV pages. While the engine is silent (a long prefill), a comment line is sent every
// heartbeat so a vanished client is noticed then too.
#pragma once

#include <httplib.h>

#include <chrono>
#include <memory>
#include <vector>

#include "server/openai_response.h"
#include "server/request_channel.h"
#include "server/server_context.h"

namespace lserve::server {

struct SseOptions {
  bool include_usage = false;
  bool logprobs = false;
  std::chrono::milliseconds heartbeat{1000};
};

// `channels`: one per choice, all created with `bell`.
void start_sse_stream(ServerContext& ctx, const ResponseHeader& header, const SseOptions& options,
                      std::vector<std::shared_ptr<RequestChannel>> channels,
                      std::shared_ptr<Doorbell> bell, httplib::Response& res);

}  // namespace lserve::server
