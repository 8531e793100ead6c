#include "server/request_log.h"

#include <fmt/format.h>

#include "core/log.h"

namespace lserve::server {
namespace {

constexpr size_t kMaxLoggedMessage = 200;

// A log line stays one line whatever a client put in its request.
std::string printable(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (out.size() >= kMaxLoggedMessage) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

RequestLog::RequestLog(std::string id, std::string endpoint, Clock::time_point arrival, int choices)
    : id_(std::move(id)), endpoint_(std::move(endpoint)), arrival_(arrival), remaining_(choices) {}

void RequestLog::finished(const RequestUpdate& u, bool counts_prompt) {
  std::lock_guard lock(mu_);
  if (!finish_reasons_.empty()) finish_reasons_ += ",";
  finish_reasons_ += finish_reason_name(u.finish_reason);
  if (counts_prompt) prompt_tokens_ += u.prompt_tokens;
  output_tokens_ += u.completion_tokens;
  const double ttft = u.timing.time_to_first_token_s;
  if (ttft > 0 && (first_token_s_ == 0 || ttft < first_token_s_)) first_token_s_ = ttft;
  if (--remaining_ > 0) return;
  const double total = std::chrono::duration<double>(Clock::now() - arrival_).count();
  log::info("{} {}: finished ({}), prompt {} tokens, output {} tokens, TTFT {}, total {:.3f} s",
            id_, endpoint_, finish_reasons_, prompt_tokens_, output_tokens_,
            first_token_s_ > 0 ? fmt::format("{:.3f} s", first_token_s_) : "-", total);
}

void log_refused(const std::string& id, const std::string& endpoint,
                 RequestLog::Clock::time_point arrival, int status, const std::string& message) {
  const double total = std::chrono::duration<double>(RequestLog::Clock::now() - arrival).count();
  log::info("{} {}: HTTP {} ({}), total {:.3f} s", id, endpoint, status, printable(message), total);
}

}  // namespace lserve::server
