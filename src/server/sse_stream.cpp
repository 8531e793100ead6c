#include "server/sse_stream.h"

#include <atomic>
#include <string>

#include "core/log.h"
#include "server/api_error.h"

namespace lserve::server {
namespace {

struct Choice {
  std::shared_ptr<RequestChannel> channel;
  std::string echo;           // sent before the choice's first output (echo), then cleared
  bool counts_prompt = true;  // the first choice of its prompt: its prompt tokens are counted
  bool first = true;
  bool done = false;
  int64_t text_offset = 0;
  int completion_tokens = 0;
  int prompt_tokens = 0;
};

struct StreamState {
  ServerContext* ctx = nullptr;
  ResponseHeader header;
  SseOptions options;
  std::vector<Choice> choices;
  std::shared_ptr<Doorbell> bell;
  bool ended = false;  // [DONE] written
};

void add_event(std::string& out, const nlohmann::json& j) {
  out += "data: ";
  out += dump_json(j);
  out += "\n\n";
}

void cancel_unfinished(StreamState& s) {
  for (Choice& c : s.choices) {
    if (!c.channel->finished()) s.ctx->loop.cancel(c.channel);
  }
}

// The events for one update of choice i. A failed choice ends the whole stream with an error.
std::string render(StreamState& s, size_t i, RequestUpdate& u) {
  std::string out;
  Choice& c = s.choices[i];
  const Tokenizer& tok = s.ctx->engine.tokenizer();
  const auto index = static_cast<int>(i);
  if (!c.echo.empty()) {
    u.text.insert(0, c.echo);
    c.echo.clear();
  }
  if (!u.text.empty() || !u.logprobs.empty() || (c.first && s.header.chat)) {
    const nlohmann::json lp = s.options.logprobs && !u.logprobs.empty()
                                  ? logprobs_json(tok, u.logprobs, s.header.chat, c.text_offset)
                                  : nlohmann::json(nullptr);
    nlohmann::json chunk = stream_chunk(s.header, u.text, c.first, "", lp);
    chunk["choices"][0]["index"] = index;
    add_event(out, chunk);
    c.first = false;
    c.text_offset += static_cast<int64_t>(u.text.size());
  }
  if (!u.finished) return out;
  c.done = true;
  if (u.shutting_down || u.finish_reason == FinishReason::kError) {
    const ApiError e = u.shutting_down
                           ? ApiError(503, "the server is shutting down", "", "shutting_down")
                           : ApiError(500, "generation failed: " + u.error);
    add_event(out, e.to_json());
    cancel_unfinished(s);
    out += "data: [DONE]\n\n";
    s.ended = true;
    return out;
  }
  nlohmann::json last =
      stream_chunk(s.header, "", false, std::string(finish_reason_name(u.finish_reason)), nullptr);
  last["choices"][0]["index"] = index;
  if (s.header.chat) last["choices"][0]["delta"] = nlohmann::json::object();
  last["lserve"] = timing_json(u.timing);
  add_event(out, last);
  c.prompt_tokens = u.prompt_tokens;
  c.completion_tokens = u.completion_tokens;
  for (const Choice& other : s.choices) {
    if (!other.done) return out;
  }
  if (s.options.include_usage) {
    int prompt = 0, completion = 0;
    for (const Choice& other : s.choices) {
      if (other.counts_prompt) prompt += other.prompt_tokens;  // each prompt once
      completion += other.completion_tokens;
    }
    add_event(out, usage_chunk(s.header, prompt, completion));
  }
  out += "data: [DONE]\n\n";
  s.ended = true;
  return out;
}

// Everything the choices have produced, without waiting.
std::string poll(StreamState& s) {
  std::string out;
  for (size_t i = 0; i < s.choices.size() && !s.ended; ++i) {
    if (s.choices[i].done) continue;
    if (auto u = s.choices[i].channel->wait(std::chrono::milliseconds(0))) out += render(s, i, *u);
  }
  return out;
}

class SseStream final : public BodySource {
 public:
  explicit SseStream(StreamState state) : s_(std::move(state)) {}

  ~SseStream() override {
    // However the stream ends, no request may keep running for nobody; and the engine thread
    // must not wake a stream that is gone.
    s_.bell->set_listener(nullptr);
    try {
      cancel_unfinished(s_);
    } catch (const std::exception& e) {
      log::error("stream {}: {}", s_.header.id, e.what());
    }
  }

  void start(std::function<void()> wake) override {
    // One wake-up in flight at a time: the engine may push every step, the loop pulls it all.
    s_.bell->set_listener([pending = pending_, wake = std::move(wake)] {
      if (!pending->exchange(true)) wake();
    });
  }

  bool pull(std::string& out, bool idle) override {
    pending_->store(false);
    // Tokens without text (a control token, half a UTF-8 character) render to nothing.
    out += poll(s_);
    if (out.empty() && idle && !s_.ended) out += ": keep-alive\n\n";
    return s_.ended;
  }

  void abort() override {
    s_.bell->set_listener(nullptr);
    cancel_unfinished(s_);
  }

  std::chrono::milliseconds heartbeat() const override { return s_.options.heartbeat; }

 private:
  StreamState s_;
  std::shared_ptr<std::atomic<bool>> pending_ = std::make_shared<std::atomic<bool>>(false);
};

}  // namespace

HttpResponse sse_head() {
  HttpResponse head;
  head.status = 200;
  head.content_type = "text/event-stream";
  head.headers.add("Cache-Control", "no-cache");
  head.headers.add("X-Accel-Buffering", "no");
  return head;
}

std::shared_ptr<BodySource> make_sse_stream(ServerContext& ctx, const ResponseHeader& header,
                                            const SseOptions& options,
                                            std::vector<std::shared_ptr<RequestChannel>> channels,
                                            std::shared_ptr<Doorbell> bell) {
  StreamState state;
  state.ctx = &ctx;
  state.header = header;
  state.options = options;
  const auto n = static_cast<size_t>(options.n);
  for (size_t i = 0; i < channels.size(); ++i) {
    Choice c;
    c.channel = std::move(channels[i]);
    if (!options.echo.empty()) c.echo = options.echo[i / n];
    c.counts_prompt = i % n == 0;
    state.choices.push_back(std::move(c));
  }
  state.bell = std::move(bell);
  return std::make_shared<SseStream>(std::move(state));
}

}  // namespace lserve::server
