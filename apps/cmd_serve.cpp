// `lserve serve MODEL`: the OpenAI-compatible HTTP server. The engine runs on its own thread
// (server::EngineLoop); this file wires flags to it and owns the process lifecycle: signals are
// blocked in every thread and taken by the main thread with sigwait, so shutdown is ordinary
// code rather than a signal handler.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "model/model_loader.h"
#include "options.h"
#include "server/cors.h"
#include "server/engine_loop.h"
#include "server/http_server.h"
#include "server/metrics.h"
#include "server/server_context.h"

namespace lserve::app {
namespace {

struct ServeOptions {
  ModelOptions model;
  server::ServerConfig server;
  std::vector<std::string> served_names;
  std::string chat_template;
  std::string generation_config = "auto";
  int max_waiting = 64;
  int max_request_kib = 16 * 1024;
  double header_timeout_s = 10;
  double body_timeout_s = 60;
  double keep_alive_timeout_s = 5;
  double shutdown_timeout_s = 10;
};

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

std::string default_model_name(const ModelOptions& o) {
  if (o.load_format == "dummy") return std::filesystem::path(o.model).filename().string();
  const std::filesystem::path p(resolve_model_path(o.model));
  return std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
}

std::optional<ChatTemplate> pick_chat_template(const ServeOptions& o, const Tokenizer& tok) {
  // A template asked for by flag must work; the model's may be missing or beyond lserve's Jinja,
  // which only costs the chat endpoint.
  if (!o.chat_template.empty()) return ChatTemplate::resolve(o.chat_template, tok);
  try {
    return ChatTemplate::resolve("", tok);
  } catch (const Error& e) {
    log::warn("no chat template: {}; /v1/chat/completions will answer 400 (use --chat-template)",
              e.what());
    return std::nullopt;
  }
}

sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// Waits for in-flight requests to finish, until `deadline`; a second signal cuts it short.
void drain(const server::EngineLoop& loop, std::chrono::steady_clock::time_point deadline) {
  const sigset_t set = shutdown_signals();
  while (loop.outstanding() > 0 && std::chrono::steady_clock::now() < deadline) {
    timespec tick{0, 100'000'000};
    if (sigtimedwait(&set, nullptr, &tick) > 0) {
      log::warn("second signal: cancelling the {} requests in flight", loop.outstanding());
      return;
    }
  }
  if (loop.outstanding() > 0) {
    log::warn("shutdown timeout: cancelling the {} requests in flight", loop.outstanding());
  }
}

int run_serve(ServeOptions& o) {
  // Before any thread exists, so every thread inherits the mask and only sigwait sees them.
  const sigset_t set = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that hung up is a failed write, not a dead server

  server::ServerConfig config = o.server;
  config.served_model_names = o.served_names;
  if (config.served_model_names.empty()) {
    // The model's name, and the name it was started with (`lserve serve default` answers to
    // "default" too).
    config.served_model_names.push_back(default_model_name(o.model));
    if (o.model.model != config.served_model_names.front()) {
      config.model_aliases.push_back(o.model.model);
    }
  }
  config.max_body_bytes = static_cast<size_t>(o.max_request_kib) << 10;
  config.http.header_timeout = millis(o.header_timeout_s);
  config.http.body_timeout = millis(o.body_timeout_s);
  config.http.keep_alive_timeout = millis(o.keep_alive_timeout_s);
  const int max_pending = o.model.max_num_seqs + o.max_waiting;

  config.generation_config = model_generation_config(o.generation_config, o.model);
  auto engine = build_engine(o.model);
  std::optional<ChatTemplate> tmpl = pick_chat_template(o, engine->tokenizer());
  server::Metrics metrics(config.served_model_names.front());
  server::EngineLoop loop(*engine, metrics, {max_pending});
  server::ServerContext ctx{config, *engine, loop, metrics, tmpl};
  ctx.id_salt = std::random_device{}();
  server::HttpServer http(ctx);
  const int port = http.bind();
  log::info("serving '{}' on http://{}:{} (OpenAI API under /v1; /health, /metrics){}",
            config.served_model_names.front(), config.host, port,
            config.api_key.empty() ? "" : "; API key required");
  std::thread listener([&] { http.listen(); });

  int sig = 0;
  sigwait(&set, &sig);
  log::info("{}: not accepting new requests; finishing the {} in flight",
            sig == SIGINT ? "SIGINT" : "SIGTERM", loop.outstanding());
  // Requests in flight get the whole timeout; then what is cancelled still gets its final answer
  // written, within half a second (a client that does not read it is cut off then).
  using std::chrono::milliseconds;
  const auto deadline = std::chrono::steady_clock::now() + millis(o.shutdown_timeout_s);
  loop.begin_drain();
  drain(loop, deadline);
  loop.stop();  // cancels what is left; every request still gets its final response
  const auto left =
      std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
  http.stop(std::max(left, milliseconds(500)));
  listener.join();
  log::info("stopped");
  return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
  auto opts = std::make_shared<ServeOptions>();
  opts->model.enable_prefix_caching = true;  // as vLLM: a server sees repeated prompts
  CLI::App* cmd =
      app.add_subcommand("serve",
                         "Serve a model over an OpenAI-compatible HTTP API (/v1/completions, "
                         "/v1/chat/completions, /v1/models, /health, /metrics)");
  add_model_options(*cmd, opts->model);
  cmd->add_option("model_tag", opts->model.model, "Model (same as --model)");
  const std::string g = "Server";
  cmd->add_option("--host", opts->server.host, "Address to listen on")
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--port", opts->server.port, "Port to listen on (0: any free port, logged)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--api-key", opts->server.api_key,
                  "Require 'Authorization: Bearer KEY' on every endpoint but /health")
      ->envname("LSERVE_API_KEY")
      ->group(g);
  cmd->add_option("--served-model-name", opts->served_names,
                  "Model name(s) clients use (default: the model file's name)")
      ->group(g);
  cmd->add_option_function<std::string>(
         "--allowed-origins",
         [opts](const std::string& v) { opts->server.cors = server::parse_allowed_origins(v); },
         "Web origins whose pages may call the API from a browser (CORS): * or a comma-separated "
         "list such as http://localhost:3000 (default: none, no CORS headers)")
      ->check([](const std::string& v) {
        try {
          server::parse_allowed_origins(v);
          return std::string();
        } catch (const Error& e) {
          return std::string(e.what());
        }
      })
      ->group(g);
  cmd->add_option(
         "--chat-template,--chat-template-file", opts->chat_template,
         "The chat template instead of the model's: a Jinja file, Jinja text itself (when it "
         "contains {{ or {%), or a builtin: chatml, llama3")
      ->group(g);
  add_generation_config_option(*cmd, opts->generation_config);
  cmd->add_option("--max-waiting-requests", opts->max_waiting,
                  "Requests that may wait beyond --max-num-seqs; more get 429")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--max-request-kib", opts->max_request_kib,
                  "Largest request body in KiB; larger ones get 413")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--http-threads", opts->server.http_threads,
                  "Worker threads that parse requests, tokenize prompts and build responses "
                  "(connections and streams need none)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--max-connections", opts->server.http.max_connections,
                  "Open connections at most; one more is answered 503 and closed")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--request-header-timeout", opts->header_timeout_s,
                  "Seconds from a request's first byte to the end of its headers (then 408)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--request-body-timeout", opts->body_timeout_s,
                  "Seconds from the end of a request's headers to the end of its body (then 408)")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--keep-alive-timeout", opts->keep_alive_timeout_s,
                  "Seconds an idle kept-alive connection stays open")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str()
      ->group(g);
  cmd->add_option("--shutdown-timeout", opts->shutdown_timeout_s,
                  "On SIGINT/SIGTERM, seconds to let requests in flight finish before cancelling")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str()
      ->group(g);
  return [opts] { return run_serve(*opts); };
}

}  // namespace lserve::app
