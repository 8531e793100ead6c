#include "server/generation_handler.h"

#include <fmt/format.h>

#include <chrono>
#include <memory>

#include "server/api_error.h"
#include "server/openai_response.h"
#include "server/prompt_builder.h"
#include "server/sse_stream.h"

namespace lserve::server {
namespace {

void check_model(const ServerContext& ctx, const std::string& model) {
  if (model.empty()) return;
  for (const auto* names : {&ctx.config.served_model_names, &ctx.config.model_aliases}) {
    for (const std::string& name : *names) {
      if (name == model) return;
    }
  }
  throw ApiError(404,
                 fmt::format("The model '{}' does not exist; this server serves '{}'", model,
                             ctx.config.served_model_names.front()),
                 "model", "model_not_found");
}

ResponseHeader make_header(ServerContext& ctx, bool chat) {
  ResponseHeader h;
  h.chat = chat;
  h.id = fmt::format("{}-{:016x}{:08x}", chat ? "chatcmpl" : "cmpl", ctx.id_salt,
                     ctx.next_request_number.fetch_add(1));
  h.created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  h.model = ctx.config.served_model_names.front();
  return h;
}

std::shared_ptr<RequestChannel> submit(ServerContext& ctx, Request request,
                                       RequestChannel::Clock::time_point arrival) {
  auto channel = std::make_shared<RequestChannel>(arrival);
  switch (ctx.loop.submit(std::move(request), channel)) {
    case Admission::kAccepted:
      return channel;
    case Admission::kQueueFull:
      ctx.metrics.count_rejected("queue_full");
      throw ApiError(429, "the server is at capacity (too many requests waiting); retry shortly",
                     "", "queue_full");
    case Admission::kShuttingDown:
      ctx.metrics.count_rejected("shutting_down");
      throw ApiError(503, "the server is shutting down", "", "shutting_down");
  }
  throw ApiError(500, "unreachable");
}

// Blocks until the request finishes (a non-streamed response is all or nothing).
void respond_whole(ServerContext& ctx, const ResponseHeader& h, bool want_logprobs,
                   const std::shared_ptr<RequestChannel>& channel, httplib::Response& res) {
  RequestUpdate all;
  while (!all.finished) {
    if (auto u = channel->wait(std::chrono::seconds(1))) all.merge(std::move(*u));
  }
  if (all.shutting_down) throw ApiError(503, "the server is shutting down", "", "shutting_down");
  if (all.finish_reason == FinishReason::kError) {
    throw ApiError(500, "generation failed: " + all.error);
  }
  const nlohmann::json lp = want_logprobs
                                ? logprobs_json(ctx.engine.tokenizer(), all.logprobs, h.chat, 0)
                                : nlohmann::json(nullptr);
  const nlohmann::json body =
      full_response(h, all.text, std::string(finish_reason_name(all.finish_reason)), lp,
                    all.prompt_tokens, all.completion_tokens, all.timing);
  res.status = 200;
  res.set_content(dump_json(body), "application/json");
}

}  // namespace

void handle_generation(ServerContext& ctx, const httplib::Request& req, httplib::Response& res,
                       bool chat) {
  const auto arrival = RequestChannel::Clock::now();
  const nlohmann::json body = parse_body(req.body);
  GenerationRequest g = chat ? parse_chat_request(body) : parse_completion_request(body);
  check_model(ctx, g.model);
  const bool stream = g.stream;
  const bool include_usage = g.include_usage;
  Request request = build_engine_request(ctx, g);
  const bool want_logprobs = request.params.logprobs >= 0;
  const ResponseHeader h = make_header(ctx, chat);
  std::shared_ptr<RequestChannel> channel = submit(ctx, std::move(request), arrival);
  if (!stream) {
    respond_whole(ctx, h, want_logprobs, channel, res);
    return;
  }
  SseOptions o;
  o.include_usage = include_usage;
  o.logprobs = want_logprobs;
  o.heartbeat = std::chrono::milliseconds(ctx.config.stream_heartbeat_ms);
  start_sse_stream(ctx, h, o, std::move(channel), res);
}

}  // namespace lserve::server
