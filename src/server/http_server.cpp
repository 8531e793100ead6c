#include "server/http_server.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/log.h"
#include "server/api_error.h"
#include "server/error_response.h"
#include "server/event_server.h"
#include "server/generation_handler.h"
#include "server/openai_request.h"
#include "server/prompt_builder.h"
#include "server/served_model.h"
#include "server/stats_log.h"

namespace lserve::server {
namespace {

using Fn = std::function<void(HttpRequest&, const std::shared_ptr<Exchange>&)>;

// Every route answers with the OpenAI error object whatever goes wrong inside it.
Handler guarded(Fn fn) {
  return [fn = std::move(fn)](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
    try {
      fn(req, ex);
    } catch (const ApiError& e) {
      ex->respond(error_response(e));
    } catch (const std::exception& e) {
      log::error("{} {}: {}", req.method, req.path, e.what());
      ex->respond(error_response(ApiError(500, fmt::format("internal error: {}", e.what()))));
    }
  };
}

HttpResponse json_response(const nlohmann::json& j) {
  return HttpResponse::text(200, dump_json(j), "application/json");
}

// Constant-time comparison, so response timing says nothing about the key.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(1, b.size())];
  return diff == 0;
}

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(ServerContext& ctx)
      : ctx_(ctx), stats_(ctx.metrics), server_(options(), routes()) {}

  ServerContext& ctx_;
  StatsLog stats_;  // before server_, whose loop uses it
  EventServer server_;

 private:
  EventServerOptions options() {
    EventServerOptions o;
    o.host = ctx_.config.host;
    o.port = ctx_.config.port;
    o.limits = ctx_.config.http;
    o.worker_threads = std::max(1, ctx_.config.http_threads);
    o.cors = ctx_.config.cors;
    // Errors the HTTP layer answers itself get the OpenAI error object too.
    o.error_response = [](int status, const std::string& message) {
      return error_response(ApiError(status, message, "", status == 404 ? "not_found" : ""));
    };
    o.admit = [this](const HttpRequest& head) { return authorize(head); };
    // While draining, answers close their connections, so clients reconnect elsewhere.
    o.keep_alive = [this] { return !ctx_.loop.draining(); };
    o.on_tick = [this] { stats_.tick(StatsLog::Clock::now()); };
    return o;
  }

  // With a key, every endpoint but /health (the load balancer's probe) needs it; checked on the
  // head, before the body is read, so an unauthorised client costs no parsing.
  std::optional<HttpResponse> authorize(const HttpRequest& head) const {
    const std::string& key = ctx_.config.api_key;
    if (key.empty() || head.path == "/health") return std::nullopt;
    if (same_secret(head.headers.get("Authorization"), "Bearer " + key)) return std::nullopt;
    HttpResponse r = error_response(
        ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')", "",
                 "invalid_api_key"));
    r.headers.add("WWW-Authenticate", "Bearer");
    return r;
  }

  Router routes() {
    Router router;
    const size_t body_limit = ctx_.config.max_body_bytes;
    // Cheap, never blocking: answered on the event loop even while every worker is busy.
    router.add(
        {"GET", "/health", guarded([this](HttpRequest&, const std::shared_ptr<Exchange>& ex) {
           if (ctx_.loop.draining()) throw ApiError(503, "the server is shutting down");
           std::string why;
           if (!ctx_.loop.healthy(&why)) {
             throw ApiError(503, "the engine cannot serve: its last steps failed (" + why + ")");
           }
           ex->respond(HttpResponse::text(200, "", "text/plain"));
         }),
         0, true});
    router.add(
        {"GET", "/metrics", guarded([this](HttpRequest&, const std::shared_ptr<Exchange>& ex) {
           ex->respond(HttpResponse::text(200, ctx_.metrics.render(), "text/plain; version=0.0.4"));
         }),
         0, true});
    router.add({"GET", "/version", guarded([](HttpRequest&, const std::shared_ptr<Exchange>& ex) {
                  ex->respond(json_response({{"version", LSERVE_VERSION}}));
                }),
                0, true});
    router.add({"GET", "/v1/models",
                guarded([this](HttpRequest&, const std::shared_ptr<Exchange>& ex) {
                  nlohmann::json data = nlohmann::json::array();
                  for (const std::string& name : ctx_.config.served_model_names) {
                    data.push_back(model_object(ctx_, name));
                  }
                  ex->respond(json_response({{"object", "list"}, {"data", data}}));
                }),
                0, true});
    // Every name a request may give as "model" can be retrieved, aliases included, so a client
    // that checks a name before using it gets the answer the request would.
    const std::string model_prefix = "/v1/models/";
    router.add(
        {"GET", model_prefix,
         guarded([this, model_prefix](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
           const std::string id = req.path.substr(model_prefix.size());
           check_model(ctx_.config, id);
           ex->respond(json_response(model_object(ctx_, id)));
         }),
         0, true, /*prefix=*/true});
    // Parsing, templating and tokenizing take milliseconds: on a worker.
    router.add({"POST", "/tokenize",
                guarded([this](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
                  const nlohmann::json body = parse_body(req.body);
                  const bool chat = body.is_object() && body.contains("messages");
                  const GenerationRequest g =
                      chat ? parse_chat_request(body) : parse_completion_request(body);
                  check_model(ctx_.config, g.model);
                  if (g.prompts.size() > 1) {
                    throw bad_request("/tokenize takes one prompt", "prompt");
                  }
                  const std::vector<int32_t> ids = tokenize_prompt(ctx_, g);
                  ex->respond(json_response({{"count", ids.size()},
                                             {"max_model_len", ctx_.engine.max_model_len()},
                                             {"tokens", ids}}));
                }),
                body_limit, false});
    router.add({"POST", "/detokenize",
                guarded([this](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
                  const Tokenizer& tok = ctx_.engine.tokenizer();
                  const DetokenizeRequest d =
                      parse_detokenize_request(parse_body(req.body), tok.vocab_size());
                  check_model(ctx_.config, d.model);
                  // Raw bytes, as generation streams them; dump_json replaces what is not UTF-8
                  // (ids that split a character).
                  ex->respond(json_response({{"prompt", tok.decode(d.tokens)}}));
                }),
                body_limit, false});
    router.add({"POST", "/v1/completions",
                guarded([this](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
                  handle_generation(ctx_, req, ex, /*chat=*/false);
                }),
                body_limit, false});
    router.add({"POST", "/v1/chat/completions",
                guarded([this](HttpRequest& req, const std::shared_ptr<Exchange>& ex) {
                  handle_generation(ctx_, req, ex, /*chat=*/true);
                }),
                body_limit, false});
    return router;
  }
};

HttpServer::HttpServer(ServerContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}
HttpServer::~HttpServer() = default;

int HttpServer::bind() { return impl_->server_.bind(); }

void HttpServer::listen() { impl_->server_.run(); }

void HttpServer::stop(std::chrono::milliseconds grace) { impl_->server_.stop(grace); }

}  // namespace lserve::server
