#include "server/error_response.h"

namespace lserve::server {

HttpResponse error_response(const ApiError& e) {
  HttpResponse r = HttpResponse::text(e.status(), dump_json(e.to_json()), "application/json");
  if (e.status() == 429) r.headers.add("Retry-After", "1");
  return r;
}

}  // namespace lserve::server
