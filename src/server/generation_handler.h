// POST /v1/completions and /v1/chat/completions: parse, build the engine request, submit it to
// the engine loop, and answer either with one JSON body once every choice finished or as a
// server-sent event stream. Runs on an HTTP worker and returns at once: the answer is completed
// through the Exchange when the engine is done (or as it goes, for a stream).
#pragma once

#include <memory>

#include "server/exchange.h"
#include "server/http_message.h"
#include "server/server_context.h"

namespace lserve::server {

// Throws ApiError for anything the client must fix or retry; the caller turns it into the error
// response.
void handle_generation(ServerContext& ctx, const HttpRequest& req,
                       const std::shared_ptr<Exchange>& ex, bool chat);

}  // namespace lserve::server
