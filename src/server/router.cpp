#include "server/router.h"

namespace lserve::server {

void Router::add(Route route) { routes_.push_back(std::move(route)); }

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  for (const Route& r : routes_) {
    const bool hit =
        r.prefix ? path.size() > r.path.size() && path.starts_with(r.path) : path == r.path;
    if (!hit) continue;
    if (r.method == method || (method == "HEAD" && r.method == "GET")) {
      m.route = &r;
      return m;
    }
    if (!m.allow.empty()) m.allow += ", ";
    m.allow += r.method == "GET" ? "GET, HEAD" : r.method;
  }
  m.status = m.allow.empty() ? 404 : 405;
  return m;
}

}  // namespace lserve::server
