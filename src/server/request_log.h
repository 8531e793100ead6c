// One info line per generation request, written once it is over, so an operator sees every
// request without a metrics stack: its id, endpoint, token counts, time to first token, total
// time, and how it ended (its choices' finish reasons, or the HTTP status it was refused with).
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include "server/request_channel.h"

namespace lserve::server {

class RequestLog {
 public:
  using Clock = std::chrono::steady_clock;

  // `choices`: how many final updates finished() will get (prompts x n).
  RequestLog(std::string id, std::string endpoint, Clock::time_point arrival, int choices);

  // Thread-safe (the engine thread calls it, through the choice's channel): the final update of
  // one choice; `counts_prompt` for one choice of each prompt, whose prompt tokens are counted
  // (once per prompt, as in the response's usage). The last choice's writes the line.
  void finished(const RequestUpdate& final_update, bool counts_prompt);

 private:
  const std::string id_;
  const std::string endpoint_;
  const Clock::time_point arrival_;
  std::mutex mu_;
  int remaining_;
  std::string finish_reasons_;  // of the choices so far, comma-separated
  int prompt_tokens_ = 0;
  int output_tokens_ = 0;
  double first_token_s_ = 0;  // the earliest choice's; 0: none yet
};

// The line of a request answered with an error instead of output. `message` is the client's to
// read, so it is logged with control characters escaped and cut short. Choices the request had
// submitted are cancelled then and never all finish, so this is the request's only line.
void log_refused(const std::string& id, const std::string& endpoint,
                 RequestLog::Clock::time_point arrival, int status, const std::string& message);

}  // namespace lserve::server
