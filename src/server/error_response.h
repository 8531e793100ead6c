// An ApiError as the HTTP answer: its status and the OpenAI error object. Apart from api_error.h
// so that the request parser builds without the HTTP types (the fuzz target links only the
// parser).
#pragma once

#include "server/api_error.h"
#include "server/http_message.h"

namespace lserve::server {

// 429 adds Retry-After: 1.
HttpResponse error_response(const ApiError& e);

}  // namespace lserve::server
