#include "server/sse_stream.h"

#include <string>

#include "core/log.h"
#include "server/api_error.h"

namespace lserve::server {
namespace {

struct StreamState {
  ServerContext* ctx = nullptr;
  ResponseHeader header;
  SseOptions options;
  std::shared_ptr<RequestChannel> channel;
  bool first = true;
  int64_t text_offset = 0;
};

void add_event(std::string& out, const nlohmann::json& j) {
  out += "data: ";
  out += dump_json(j);
  out += "\n\n";
}

// The events for one update of the request.
std::string render(StreamState& s, RequestUpdate& u) {
  std::string out;
  const Tokenizer& tok = s.ctx->engine.tokenizer();
  if (!u.text.empty() || !u.logprobs.empty() || (s.first && s.header.chat)) {
    const nlohmann::json lp = s.options.logprobs && !u.logprobs.empty()
                                  ? logprobs_json(tok, u.logprobs, s.header.chat, s.text_offset)
                                  : nlohmann::json(nullptr);
    add_event(out, stream_chunk(s.header, u.text, s.first, "", lp));
    s.first = false;
    s.text_offset += static_cast<int64_t>(u.text.size());
  }
  if (!u.finished) return out;
  if (u.shutting_down || u.finish_reason == FinishReason::kError) {
    const ApiError e = u.shutting_down
                           ? ApiError(503, "the server is shutting down", "", "shutting_down")
                           : ApiError(500, "generation failed: " + u.error);
    add_event(out, e.to_json());
  } else {
    nlohmann::json last = stream_chunk(s.header, "", false,
                                       std::string(finish_reason_name(u.finish_reason)), nullptr);
    if (s.header.chat) last["choices"][0]["delta"] = nlohmann::json::object();
    last["lserve"] = timing_json(u.timing);
    add_event(out, last);
    if (s.options.include_usage) {
      add_event(out, usage_chunk(s.header, u.prompt_tokens, u.completion_tokens));
    }
  }
  out += "data: [DONE]\n\n";
  return out;
}

// Waits for the next update (or a heartbeat's worth of silence) and writes it. False when the
// client is gone, which cancels the request.
bool write_next(StreamState& s, httplib::DataSink& sink) {
  std::optional<RequestUpdate> u = s.channel->wait(s.options.heartbeat);
  const std::string data = u ? render(s, *u) : std::string(": keep-alive\n\n");
  // Tokens without text (a control token, half a UTF-8 character) render to nothing, and an
  // empty chunk would end the chunked body.
  if (!data.empty() && !sink.write(data.data(), data.size())) {
    s.ctx->loop.cancel(s.channel);
    return false;
  }
  if (u && u->finished) sink.done();
  return true;
}

}  // namespace

void start_sse_stream(ServerContext& ctx, const ResponseHeader& header, const SseOptions& options,
                      std::shared_ptr<RequestChannel> channel, httplib::Response& res) {
  auto state = std::make_shared<StreamState>();
  state->ctx = &ctx;
  state->header = header;
  state->options = options;
  state->channel = std::move(channel);
  ++ctx.open_streams;
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [state](size_t /*offset*/, httplib::DataSink& sink) {
        // This runs outside the HTTP library's handler try-block: nothing may escape it.
        try {
          return write_next(*state, sink);
        } catch (const std::exception& e) {
          log::error("stream {}: {}", state->header.id, e.what());
          state->ctx->loop.cancel(state->channel);
          return false;
        }
      },
      // However the response ends (finished, write error, server stopping), an unfinished
      // request must not keep running for nobody.
      [state](bool /*success*/) {
        try {
          if (!state->channel->finished()) state->ctx->loop.cancel(state->channel);
        } catch (const std::exception& e) {
          log::error("stream {}: {}", state->header.id, e.what());
        }
        --state->ctx->open_streams;
      });
}

}  // namespace lserve::server
