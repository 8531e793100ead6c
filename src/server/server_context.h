// What the HTTP handlers share: configuration, the engine's fixed facts, the engine loop and the
// metrics. Owned by whoever runs the server; handlers hold it by reference.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/generation_config.h"
#include "server/cors.h"
#include "server/engine_loop.h"
#include "server/http_limits.h"
#include "server/metrics.h"
#include "tokenizer/chat_template.h"

namespace lserve::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;                              // 0: any free port
  std::vector<std::string> served_model_names;  // the first is the one /v1/models lists
  // Also accepted as "model", never listed: the name the server was started with.
  std::vector<std::string> model_aliases;
  std::string api_key;                // empty: no authentication
  size_t max_body_bytes = 16u << 20;  // per POST endpoint; larger bodies get 413, unread
  int http_threads = 4;               // workers that parse, tokenize and build responses
  int stream_heartbeat_ms = 1000;     // SSE comment sent after this much silence
  HttpLimits http;                    // connections, deadlines, header sizes
  CorsPolicy cors;                    // --allowed-origins; off by default
  // The model's generation_config.json (--generation-config auto): defaults for the sampling
  // fields a request leaves unset, and its max_new_tokens caps the default max_tokens.
  std::optional<GenerationConfig> generation_config;
};

struct ServerContext {
  ServerConfig config;
  // Only what is fixed at construction is used from HTTP threads: validate(), tokenizer(),
  // max_model_len(). Everything else belongs to the engine thread.
  const Engine& engine;
  EngineLoop& loop;
  Metrics& metrics;
  std::optional<ChatTemplate> chat_template;  // none: /v1/chat/completions answers 400
  std::atomic<uint64_t> next_request_number{1};
  uint64_t id_salt = 0;  // makes response ids differ between server runs
};

}  // namespace lserve::server
