#include "server/http_server.h"

#include <httplib.h>

#include <fmt/format.h>

#include <sys/socket.h>

#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"
#include "server/generation_handler.h"
#include "server/openai_request.h"
#include "server/prompt_builder.h"

namespace lserve::server {
namespace {

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump_json(e.to_json()), "application/json");
}

// Every route answers with the OpenAI error object whatever goes wrong inside it.
httplib::Server::Handler guarded(
    std::function<void(const httplib::Request&, httplib::Response&)> fn) {
  return [fn = std::move(fn)](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const ApiError& e) {
      if (e.status() == 429) res.set_header("Retry-After", "1");
      send_error(res, e);
    } catch (const std::exception& e) {
      log::error("{} {}: {}", req.method, req.path, e.what());
      send_error(res, ApiError(500, fmt::format("internal error: {}", e.what())));
    }
  };
}

// Constant-time comparison, so response timing says nothing about the key.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(1, b.size())];
  return diff == 0;
}

std::string default_message(int status) {
  switch (status) {
    case 400:
      return "the request could not be parsed";
    case 404:
      return "no such endpoint";
    case 413:
      return "the request body is too large";
    case 414:
      return "the request URI is too long";
    case 431:
      return "the request headers are too large";
    default:
      return fmt::format("HTTP error {}", status);
  }
}

}  // namespace

class HttpServer::Impl {
 public:
  explicit Impl(ServerContext& ctx) : ctx_(ctx) {
    const int threads = std::max(4, ctx.config.http_threads);
    svr_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    svr_.set_payload_max_length(ctx.config.max_body_bytes);
    svr_.set_keep_alive_timeout(5);
    svr_.set_read_timeout(10);
    svr_.set_write_timeout(10);
    svr_.set_tcp_nodelay(true);
    // The library's default also sets SO_REUSEPORT, which lets a second server bind the same
    // port and take half of its connections: only SO_REUSEADDR (restarts while old connections
    // linger in TIME_WAIT), and the listening socket is kept to raise its backlog after bind.
    svr_.set_socket_options([this](int sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      listen_sock_ = sock;
    });
    set_routes();
  }

  // cpp-httplib listens with a backlog of 5 (a compiled-in constant): a burst of clients beyond
  // it got TCP resets with no HTTP answer. listen() again on the bound socket raises it.
  void raise_backlog() {
    if (listen_sock_ >= 0 && ::listen(listen_sock_, kListenBacklog) != 0) {
      log::warn("cannot raise the listen backlog to {}", kListenBacklog);
    }
  }

  static constexpr int kListenBacklog = 1024;
  httplib::Server svr_;
  int listen_sock_ = -1;
  ServerContext& ctx() { return ctx_; }

 private:
  void set_routes() {
    svr_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // No endpoint serves byte ranges: the library would otherwise answer a Range header of a
      // thousand ranges with a thousand copies of the body. The request object is the library's
      // own, non-const one; only its parsed ranges are dropped.
      const_cast<httplib::Request&>(req).ranges.clear();
      return authorize(req, res);
    });
    // Library-generated errors (unknown route, body over the limit, unparsable request) get an
    // OpenAI error body too; errors the handlers produced already have one.
    svr_.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string code = res.status == 404 ? "not_found" : "";
      send_error(res, ApiError(res.status, default_message(res.status), "", code));
    });
    svr_.Get("/health", guarded([this](const httplib::Request&, httplib::Response& res) {
               if (ctx_.loop.draining()) throw ApiError(503, "the server is shutting down");
               std::string why;
               if (!ctx_.loop.healthy(&why)) {
                 throw ApiError(503, "the engine cannot serve: its last steps failed (" + why +
                                         ")");
               }
               res.set_content("", "text/plain");
             }));
    svr_.Get("/metrics", guarded([this](const httplib::Request&, httplib::Response& res) {
               res.set_content(ctx_.metrics.render(), "text/plain; version=0.0.4");
             }));
    svr_.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& res) {
               nlohmann::json data = nlohmann::json::array();
               for (const std::string& name : ctx_.config.served_model_names) {
                 data.push_back({{"id", name},
                                 {"object", "model"},
                                 {"created", 0},
                                 {"owned_by", "lserve"},
                                 {"max_model_len", ctx_.engine.max_model_len()}});
               }
               res.set_content(dump_json({{"object", "list"}, {"data", data}}), "application/json");
             }));
    svr_.Post("/tokenize", guarded([this](const httplib::Request& req, httplib::Response& res) {
                const nlohmann::json body = parse_body(req.body);
                const bool chat = body.is_object() && body.contains("messages");
                const GenerationRequest g =
                    chat ? parse_chat_request(body) : parse_completion_request(body);
                const std::vector<int32_t> ids = tokenize_prompt(ctx_, g);
                res.set_content(dump_json({{"count", ids.size()},
                                           {"max_model_len", ctx_.engine.max_model_len()},
                                           {"tokens", ids}}),
                                "application/json");
              }));
    svr_.Post("/v1/completions",
              guarded([this](const httplib::Request& req, httplib::Response& res) {
                handle_generation(ctx_, req, res, /*chat=*/false);
              }));
    svr_.Post("/v1/chat/completions",
              guarded([this](const httplib::Request& req, httplib::Response& res) {
                handle_generation(ctx_, req, res, /*chat=*/true);
              }));
  }

  httplib::Server::HandlerResponse authorize(const httplib::Request& req, httplib::Response& res) {
    // With a key, every endpoint but /health (the load balancer's probe) needs it; checked
    // before the body is read, so an unauthorised client costs no parsing.
    const std::string& key = ctx_.config.api_key;
    if (key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    if (same_secret(req.get_header_value("Authorization"), "Bearer " + key)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, ApiError(401, "missing or invalid API key (send 'Authorization: Bearer KEY')",
                             "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  }

  ServerContext& ctx_;
};

HttpServer::HttpServer(ServerContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}
HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const ServerConfig& c = impl_->ctx().config;
  httplib::Server& svr = impl_->svr_;
  const int port =
      c.port == 0 ? svr.bind_to_any_port(c.host) : (svr.bind_to_port(c.host, c.port) ? c.port : -1);
  LSERVE_CHECK(port > 0,
               "cannot listen on {}:{} (address in use, or not an address of this "
               "machine?)",
               c.host, c.port);
  impl_->raise_backlog();
  return port;
}

void HttpServer::listen() { impl_->svr_.listen_after_bind(); }

void HttpServer::stop(std::chrono::milliseconds grace) {
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (impl_->ctx().open_streams.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->svr_.stop();
}

}  // namespace lserve::server
