#include "server/generation_handler.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "server/api_error.h"
#include "server/error_response.h"
#include "server/openai_response.h"
#include "server/prompt_builder.h"
#include "server/request_log.h"
#include "server/served_model.h"
#include "server/sse_stream.h"

namespace lserve::server {
namespace {

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

ApiError queue_full(ServerContext& ctx) {
  ctx.metrics.count_rejected("queue_full");
  return ApiError(429, "the server is at capacity (too many requests waiting); retry shortly", "",
                  "queue_full");
}

// Submits the n choices of each prompt, prompt by prompt, so that choice index = prompt index * n
// + choice (choice i samples with seed + i when a seed is given, whatever its prompt); all or
// none: if one is refused, the ones already accepted are cancelled.
std::vector<std::shared_ptr<RequestChannel>> submit(ServerContext& ctx,
                                                    const std::vector<Request>& requests, int n,
                                                    const std::shared_ptr<Doorbell>& bell,
                                                    RequestChannel::Clock::time_point arrival,
                                                    const std::shared_ptr<RequestLog>& log) {
  std::vector<std::shared_ptr<RequestChannel>> channels;
  for (const Request& request : requests) {
    for (int i = 0; i < n; ++i) {
      Request choice = request;
      if (choice.params.seed) *choice.params.seed += static_cast<uint64_t>(i);
      // Each prompt is a request in the metrics, as vLLM counts them; its other choices are not.
      const bool first = i == 0;
      auto channel = std::make_shared<RequestChannel>(
          arrival, bell, /*counted=*/first,
          [log, first](const RequestUpdate& u) { log->finished(u, first); });
      const Admission a = ctx.loop.submit(std::move(choice), channel);
      if (a == Admission::kAccepted) {
        channels.push_back(std::move(channel));
        continue;
      }
      for (const auto& accepted : channels) ctx.loop.cancel(accepted);
      if (a == Admission::kQueueFull) throw queue_full(ctx);
      ctx.metrics.count_rejected("shutting_down");
      throw ApiError(503, "the server is shutting down", "", "shutting_down");
    }
  }
  return channels;
}

// A non-streamed response is all or nothing: it is built once every choice has finished. The
// doorbell's listener (on the engine thread) only checks that; the response is built on a
// worker. Held by the exchange's abort callback until the exchange completes.
struct WholeResponse {
  ServerContext* ctx = nullptr;
  ResponseHeader header;
  bool want_logprobs = false;
  int n = 1;                      // choices per prompt
  std::vector<std::string> echo;  // per prompt: the text its choices start with (echo)
  std::vector<std::shared_ptr<RequestChannel>> channels;
  std::shared_ptr<Exchange> ex;
  std::atomic<bool> answered{false};
};

HttpResponse build_whole(const WholeResponse& w) {
  std::vector<RequestUpdate> results(w.channels.size());
  for (size_t i = 0; i < w.channels.size(); ++i) {
    // Nothing was read before: each channel holds the whole of its choice, merged.
    if (auto u = w.channels[i]->wait(std::chrono::milliseconds(0))) results[i] = std::move(*u);
  }
  for (const RequestUpdate& all : results) {
    if (all.shutting_down) throw ApiError(503, "the server is shutting down", "", "shutting_down");
    if (all.finish_reason == FinishReason::kError) {
      throw ApiError(500, "generation failed: " + all.error);
    }
  }
  const ResponseHeader& h = w.header;
  nlohmann::json body;
  int prompt_tokens = 0;
  int completion_tokens = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const RequestUpdate& all = results[i];
    const size_t prompt = i / static_cast<size_t>(w.n);
    const nlohmann::json lp =
        w.want_logprobs ? logprobs_json(w.ctx->engine.tokenizer(), all.logprobs, h.chat, 0)
                        : nlohmann::json(nullptr);
    const std::string text = w.echo.empty() ? all.text : w.echo[prompt] + all.text;
    nlohmann::json one = full_response(h, text, std::string(finish_reason_name(all.finish_reason)),
                                       lp, all.prompt_tokens, all.completion_tokens, all.timing);
    // Each prompt is counted once, every choice's generated tokens are.
    if (i % static_cast<size_t>(w.n) == 0) prompt_tokens += all.prompt_tokens;
    completion_tokens += all.completion_tokens;
    if (i == 0) {
      body = std::move(one);
    } else {
      one["choices"][0]["index"] = static_cast<int>(i);
      body["choices"].push_back(std::move(one["choices"][0]));
    }
  }
  body["usage"] = usage_json(prompt_tokens, completion_tokens);
  return HttpResponse::text(200, dump_json(body), "application/json");
}

void answer_when_finished(const std::shared_ptr<WholeResponse>& w) {
  for (const auto& channel : w->channels) {
    if (!channel->finished()) return;
  }
  if (w->answered.exchange(true)) return;
  w->ex->respond_later([w] {
    try {
      return build_whole(*w);
    } catch (const ApiError& e) {
      return error_response(e);
    }
  });
}

void respond_whole(ServerContext& ctx, const ResponseHeader& h, bool want_logprobs, int n,
                   std::vector<std::string> echo,
                   std::vector<std::shared_ptr<RequestChannel>> channels,
                   const std::shared_ptr<Doorbell>& bell, const std::shared_ptr<Exchange>& ex) {
  auto w = std::make_shared<WholeResponse>();
  w->ctx = &ctx;
  w->header = h;
  w->want_logprobs = want_logprobs;
  w->n = n;
  w->echo = std::move(echo);
  w->channels = std::move(channels);
  w->ex = ex;
  // A client that leaves before the answer stops its request: nobody would read it.
  ex->on_abort([w] {
    for (const auto& channel : w->channels) w->ctx->loop.cancel(channel);
  });
  bell->set_listener([weak = std::weak_ptr<WholeResponse>(w)] {
    if (auto alive = weak.lock()) answer_when_finished(alive);
  });
  answer_when_finished(w);  // it may have finished before the listener was set
}

void run_generation(ServerContext& ctx, const HttpRequest& req, const std::shared_ptr<Exchange>& ex,
                    const ResponseHeader& h, RequestChannel::Clock::time_point arrival,
                    const std::string& endpoint) {
  const nlohmann::json body = parse_body(req.body);
  const GenerationConfig* defaults =
      ctx.config.generation_config ? &*ctx.config.generation_config : nullptr;
  const GenerationRequest g =
      h.chat ? parse_chat_request(body, defaults) : parse_completion_request(body, defaults);
  check_model(ctx.config, g.model);
  const size_t prompts = g.chat ? 1 : g.prompts.size();
  const int choices = static_cast<int>(prompts) * g.n;  // within kMaxChoices (the parser's check)
  // A full server answers before spending a tokenization on the prompts.
  if (ctx.loop.full_for(choices)) throw queue_full(ctx);
  const std::vector<Request> requests = build_engine_requests(ctx, g);
  const bool want_logprobs = requests.front().params.logprobs >= 0;
  // echo: a text prompt as given, a token-id prompt decoded.
  std::vector<std::string> echo;
  if (g.echo) {
    for (size_t i = 0; i < prompts; ++i) {
      const CompletionPrompt& p = g.prompts[i];
      echo.push_back(p.text ? *p.text : ctx.engine.tokenizer().decode(p.ids));
    }
  }
  auto bell = std::make_shared<Doorbell>();
  auto log = std::make_shared<RequestLog>(h.id, endpoint, arrival, choices);
  std::vector<std::shared_ptr<RequestChannel>> channels =
      submit(ctx, requests, g.n, bell, arrival, log);
  if (!g.stream) {
    respond_whole(ctx, h, want_logprobs, g.n, std::move(echo), std::move(channels), bell, ex);
    return;
  }
  SseOptions o;
  o.include_usage = g.include_usage;
  o.logprobs = want_logprobs;
  o.heartbeat = std::chrono::milliseconds(ctx.config.stream_heartbeat_ms);
  o.n = g.n;
  o.echo = std::move(echo);
  ex->stream(sse_head(), make_sse_stream(ctx, h, o, std::move(channels), std::move(bell)));
}

}  // namespace

void handle_generation(ServerContext& ctx, const HttpRequest& req,
                       const std::shared_ptr<Exchange>& ex, bool chat) {
  const auto arrival = RequestChannel::Clock::now();
  // First, so that the log names a refused request too.
  const ResponseHeader h = make_header(ctx, chat);
  const std::string endpoint = req.method + " " + req.path;
  try {
    run_generation(ctx, req, ex, h, arrival, endpoint);
  } catch (const ApiError& e) {
    log_refused(h.id, endpoint, arrival, e.status(), e.what());
    throw;
  } catch (const std::exception& e) {
    log_refused(h.id, endpoint, arrival, 500, e.what());
    throw;
  }
}

}  // namespace lserve::server
