#include "server/served_model.h"

#include <fmt/format.h>

#include "server/api_error.h"

namespace lserve::server {
namespace {

bool serves_model(const ServerConfig& config, const std::string& name) {
  for (const auto* names : {&config.served_model_names, &config.model_aliases}) {
    for (const std::string& served : *names) {
      if (served == name) return true;
    }
  }
  return false;
}

}  // namespace

void check_model(const ServerConfig& config, const std::string& name) {
  if (name.empty() || serves_model(config, name)) return;
  throw ApiError(404,
                 fmt::format("The model '{}' does not exist; this server serves '{}'", name,
                             config.served_model_names.front()),
                 "model", "model_not_found");
}

nlohmann::json model_object(const ServerContext& ctx, const std::string& id) {
  return {{"id", id},
          {"object", "model"},
          {"created", 0},
          {"owned_by", "lserve"},
          {"max_model_len", ctx.engine.max_model_len()}};
}

}  // namespace lserve::server
