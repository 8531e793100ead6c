// POST /v1/completions and /v1/chat/completions: parse, build the engine request, submit it to
// the engine loop, and answer either with one JSON body or as a server-sent event stream.
#pragma once

#include <httplib.h>

#include "server/server_context.h"

namespace lserve::server {

// Throws ApiError for anything the client must fix or retry; the caller turns it into the error
// response.
void handle_generation(ServerContext& ctx, const httplib::Request& req, httplib::Response& res,
                       bool chat);

}  // namespace lserve::server
