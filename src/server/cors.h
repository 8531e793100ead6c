// Cross-origin resource sharing (CORS), as vLLM's --allowed-origins: which web pages' scripts may
// call the API from a browser. Pure functions of the policy and a request head; the connection
// applies them to every answer and to preflight requests (OPTIONS), before authentication, since
// browsers send preflights without credentials.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "server/http_message.h"

namespace lserve::server {

struct CorsPolicy {
  bool any_origin = false;           // "*"
  std::vector<std::string> origins;  // exact "scheme://host[:port]" values, as browsers send them
  // Off (the default): no CORS headers, and OPTIONS is a method no route takes (405).
  bool enabled() const { return any_origin || !origins.empty(); }
};

// The flag's value: "*", a comma-separated list of origins, or a JSON array of them (vLLM's
// form). Error for an entry that is not an origin (a path or a trailing slash never matches).
CorsPolicy parse_allowed_origins(std::string_view value);

// The headers every answer to `request` gets: Access-Control-Allow-Origin when its Origin is
// allowed, and (with a list of origins) Vary: Origin, so that caches keep answers apart.
void add_cors_headers(const CorsPolicy& policy, const HttpRequest& request, HttpHeaders& out);

// 204 to an OPTIONS request on a path whose methods are `allow` ("POST", "GET, HEAD"); a
// preflight from an allowed origin also gets the methods, the headers it asked for, and how long
// the browser may remember the answer. add_cors_headers() is applied to it like any answer.
HttpResponse options_response(const CorsPolicy& policy, const HttpRequest& request,
                              const std::string& allow);

}  // namespace lserve::server
