// Streams a request's output as server-sent events (`data: {chunk}\n\n` ... `data: [DONE]\n\n`).
// Each chunk carries its choice's index (prompt index * n + choice, for several prompts or n > 1);
// the choices' chunks interleave as their output comes, and [DONE] follows the last choice.
// The stream is a BodySource: the engine thread's pushes ring the request's doorbell, which wakes
// the event loop, which pulls the rendered events when the socket can take them; no thread waits
// for a stream. If the stream ends early (the client left, the server stopped), its unfinished
// choices are cancelled at once, which frees their KV pages. While the engine is silent (a long
// prefill), a comment line is sent every heartbeat.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "server/exchange.h"
#include "server/openai_response.h"
#include "server/request_channel.h"
#include "server/server_context.h"

namespace lserve::server {

struct SseOptions {
  bool include_usage = false;
  bool logprobs = false;
  std::chrono::milliseconds heartbeat{1000};
  int n = 1;  // choices per prompt: the channels are prompt by prompt, n each
  // echo: per prompt, the text its choices' first chunks start with; empty: no echo.
  std::vector<std::string> echo;
};

// The response head of an event stream (200, text/event-stream, no caching or proxy buffering).
HttpResponse sse_head();

// `channels`: one per choice, in index order, all created with `bell`.
std::shared_ptr<BodySource> make_sse_stream(ServerContext& ctx, const ResponseHeader& header,
                                            const SseOptions& options,
                                            std::vector<std::shared_ptr<RequestChannel>> channels,
                                            std::shared_ptr<Doorbell> bell);

}  // namespace lserve::server
