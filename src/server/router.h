// The route table: method and exact path to a handler, with the per-route limits that are decided
// from the request head alone (before any body is read).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "server/exchange.h"

namespace lserve::server {

struct Route {
  std::string method;  // GET routes answer HEAD too
  // The exact path; with `prefix`, the start of the path, which must go on (a resource under it,
  // as "/v1/models/" + a model id; the handler reads the rest from the request's path).
  std::string path;
  Handler handler;
  size_t max_body_bytes = 0;  // a larger declared or received body gets 413, unread
  // Cheap and non-blocking (health, metrics): runs on the event-loop thread, so it is answered
  // even while every worker is busy.
  bool on_loop = false;
  bool prefix = false;
};

class Router {
 public:
  void add(Route route);

  struct Match {
    const Route* route = nullptr;
    int status = 0;     // without a route: 404, or 405 when the path exists
    std::string allow;  // with 405: the methods the path takes, for the Allow header
  };
  Match match(std::string_view method, std::string_view path) const;

 private:
  std::vector<Route> routes_;
};

}  // namespace lserve::server
