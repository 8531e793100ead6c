// The served model as clients name it: which names the server answers to, and the OpenAI model
// object that /v1/models lists and /v1/models/{id} returns.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "server/server_context.h"

namespace lserve::server {

// ApiError 404 (code model_not_found, param model) unless `name` is empty (the served model) or
// one the server answers to: a served name, or an alias (the name it was started with).
void check_model(const ServerConfig& config, const std::string& name);

// OpenAI's model object, with vLLM's max_model_len.
nlohmann::json model_object(const ServerContext& ctx, const std::string& id);

}  // namespace lserve::server
