// Errors a request can get, in the OpenAI error shape:
// {"error": {"message", "type", "param", "code"}} with the matching HTTP status.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>

namespace lserve::server {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});

  int status() const { return status_; }
  // OpenAI's error type for the status: invalid_request_error, authentication_error, ...
  std::string type() const;
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  nlohmann::json to_json() const;

 private:
  int status_;
  std::string param_;
  std::string code_;
};

// 400 naming the offending body field.
inline ApiError bad_request(std::string message, std::string param = {}) {
  return ApiError(400, std::move(message), std::move(param));
}

// JSON text that never throws on invalid UTF-8 (model output and echoed input may hold any bytes).
std::string dump_json(const nlohmann::json& j);

}  // namespace lserve::server
