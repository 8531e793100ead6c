#include "server/cors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace lserve::server {
namespace {

// Seconds a browser may reuse a preflight answer (Starlette's default, so vLLM's).
constexpr const char* kMaxAgeSeconds = "600";
// Allowed request headers when a preflight names none.
constexpr const char* kDefaultAllowHeaders = "Authorization, Content-Type";

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// "scheme://host[:port]": what a browser sends as Origin. "null" (sandboxed pages, files) is one
// too, for those who want it.
bool is_origin(std::string_view s) {
  if (s == "null") return true;
  const size_t sep = s.find("://");
  if (sep == std::string_view::npos || sep == 0 || sep + 3 == s.size()) return false;
  if (!std::isalpha(static_cast<unsigned char>(s.front()))) return false;
  const auto scheme_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  };
  if (!std::all_of(s.begin(), s.begin() + sep, scheme_char)) return false;
  const std::string_view rest = s.substr(sep + 3);
  return std::none_of(rest.begin(), rest.end(), [](char c) {
    return c == '/' || c == '?' || c == '#' || std::isspace(static_cast<unsigned char>(c)) ||
           std::iscntrl(static_cast<unsigned char>(c));
  });
}

void add_origin(CorsPolicy& p, std::string_view entry) {
  entry = trim(entry);
  if (entry == "*") {
    p.any_origin = true;
    return;
  }
  LSERVE_CHECK(is_origin(entry),
               "'{}' is not an origin (scheme://host[:port], no path or trailing slash, or *)",
               entry);
  p.origins.emplace_back(entry);
}

// An Access-Control-Request-Headers value is echoed only if it is a plain list of header names.
bool is_header_list(std::string_view s) {
  static constexpr std::string_view kTokenPunct = "!#$%&'*+-.^_`|~";
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || kTokenPunct.find(c) != kTokenPunct.npos ||
           c == ',' || c == ' ' || c == '\t';
  });
}

bool origin_allowed(const CorsPolicy& p, const std::string& origin) {
  if (origin.empty()) return false;
  return p.any_origin || std::find(p.origins.begin(), p.origins.end(), origin) != p.origins.end();
}

}  // namespace

CorsPolicy parse_allowed_origins(std::string_view value) {
  CorsPolicy p;
  value = trim(value);
  if (!value.empty() && value.front() == '[') {
    const nlohmann::json list = nlohmann::json::parse(value, nullptr, /*allow_exceptions=*/false);
    LSERVE_CHECK(list.is_array(), "'{}' is not a JSON array of origins", value);
    for (const nlohmann::json& e : list) {
      LSERVE_CHECK(e.is_string(), "{} is not a string (an origin)", e.dump());
      add_origin(p, e.get<std::string>());
    }
    return p;
  }
  size_t start = 0;
  while (start <= value.size()) {
    const size_t comma = std::min(value.find(',', start), value.size());
    const std::string_view entry = trim(value.substr(start, comma - start));
    if (!entry.empty()) add_origin(p, entry);
    start = comma + 1;
  }
  return p;
}

void add_cors_headers(const CorsPolicy& policy, const HttpRequest& request, HttpHeaders& out) {
  if (!policy.enabled()) return;
  const std::string origin = request.headers.get("Origin");
  if (origin_allowed(policy, origin)) {
    out.add("Access-Control-Allow-Origin", policy.any_origin ? "*" : origin);
  }
  if (!policy.any_origin) out.add("Vary", "Origin");
}

HttpResponse options_response(const CorsPolicy& policy, const HttpRequest& request,
                              const std::string& allow) {
  HttpResponse r;
  r.status = 204;
  r.headers.add("Allow", allow + ", OPTIONS");
  const bool preflight = request.headers.find("Access-Control-Request-Method") != nullptr;
  if (!preflight || !origin_allowed(policy, request.headers.get("Origin"))) return r;
  r.headers.add("Access-Control-Allow-Methods", allow + ", OPTIONS");
  const std::string asked = request.headers.get("Access-Control-Request-Headers");
  r.headers.add("Access-Control-Allow-Headers",
                !asked.empty() && is_header_list(asked) ? asked : kDefaultAllowHeaders);
  r.headers.add("Access-Control-Max-Age", kMaxAgeSeconds);
  return r;
}

}  // namespace lserve::server
