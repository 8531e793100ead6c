#include "engine/engine.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/log.h"
#include "engine/sampler.h"

namespace lserve {
namespace {

using Clock = std::chrono::steady_clock;

KvCacheConfig kv_config(const ModelConfig& m, const EngineConfig& c, DType dtype) {
  KvCacheConfig k;
  k.n_layers = m.n_layers;
  k.n_kv_heads = m.n_kv_heads;
  k.head_dim = m.head_dim;
  k.page_size = c.page_size;
  k.logical_page_size = c.logical_page_size;
  LSERVE_CHECK(c.page_size > 0 && c.logical_page_size > 0 && c.page_size % c.logical_page_size == 0,
               "page size {} must be a positive multiple of the logical page size {}", c.page_size,
               c.logical_page_size);
  // K and V plus the kmin/kmax statistics (2 vectors per logical page).
  const int64_t per_page = static_cast<int64_t>(m.n_layers) * m.n_kv_heads * m.head_dim *
                           (2 * c.page_size + 2 * (c.page_size / c.logical_page_size)) *
                           static_cast<int64_t>(dtype_size(dtype));
  k.num_pages = c.num_pages > 0 ? c.num_pages : static_cast<int>(c.kv_cache_bytes / per_page);
  LSERVE_CHECK(k.num_pages >= 1, "the KV cache budget of {} bytes holds no page ({} bytes each)",
               c.kv_cache_bytes, per_page);
  return k;
}

std::unique_ptr<Tokenizer> make_tokenizer(LoadedModel& m) {
  LSERVE_CHECK(m.tokenizer.has_value(),
               "{}: the model has no tokenizer (dummy weights need a tokenizer.json beside "
               "config.json)",
               m.source);
  return std::make_unique<Tokenizer>(std::move(*m.tokenizer));
}

}  // namespace

std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kError: return "error";
  }
  return "";
}

Engine::Engine(std::unique_ptr<Backend> backend, LoadedModel loaded, const EngineConfig& config)
    : backend_(std::move(backend)),
      tokenizer_(make_tokenizer(loaded)),
      model_(make_model(loaded.config, std::move(loaded.weights))),
      cache_(std::make_unique<KvCache>(
          *backend_, kv_config(loaded.config, config, backend_->compute_dtype()),
          HeadMap::all_retrieval(loaded.config.n_layers, loaded.config.n_kv_heads))),
      blocks_(cache_->config().num_pages, config.page_size),
      scheduler_(config.scheduler, blocks_),
      runner_(*model_, *backend_, *cache_) {
  const ModelConfig& mc = model_->config();
  max_model_len_ = config.max_model_len > 0 ? config.max_model_len : mc.max_context;
  const int64_t pool_tokens = static_cast<int64_t>(blocks_.pool().num_pages()) * config.page_size;
  if (pool_tokens < max_model_len_) {
    log::warn("KV cache holds {} tokens, less than the context length {}; limiting it to {}",
              pool_tokens, max_model_len_, pool_tokens);
    max_model_len_ = static_cast<int>(pool_tokens);
  }
  stop_ids_ = tokenizer_->stop_token_ids();
  log::info("KV cache: {} pages of {} tokens ({:.1f} MiB), max model length {}",
            blocks_.pool().num_pages(), config.page_size, cache_->bytes() / 1048576.0,
            max_model_len_);
}

Engine::~Engine() = default;

int64_t Engine::submit(Request req) {
  req.params.validate();
  LSERVE_CHECK(!req.prompt.empty(), "the prompt is empty");
  const int64_t prompt_len = static_cast<int64_t>(req.prompt.size());
  LSERVE_CHECK(prompt_len + 1 <= max_model_len_,
               "the prompt has {} tokens but the maximum context length is {} (including at least "
               "one generated token)",
               prompt_len, max_model_len_);
  for (int32_t t : req.prompt) {
    LSERVE_CHECK(t >= 0 && t < model_->config().vocab_size,
                 "token id {} is outside the vocabulary ({})", t, model_->config().vocab_size);
  }
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_++;
  seq->tokens = std::move(req.prompt);
  seq->prompt_len = static_cast<int32_t>(prompt_len);
  seq->params = std::move(req.params);
  seq->rng.seed(seq->params.seed ? *seq->params.seed : std::random_device{}());
  seq->detok = std::make_unique<IncrementalDetokenizer>(*tokenizer_);
  seq->arrival = Clock::now();
  const int64_t id = seq->id;
  scheduler_.add(seq.get());
  seqs_.emplace(id, std::move(seq));
  return id;
}

bool Engine::cancel(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  Sequence& seq = *it->second;
  SeqOutput out;
  out.id = id;
  finish(seq, FinishReason::kCancelled, out);
  cancelled_.push_back(std::move(out));
  seqs_.erase(it);
  return true;
}

bool Engine::is_stop_token(const Sequence& seq, int32_t token) const {
  const auto& extra = seq.params.stop_token_ids;
  if (std::find(extra.begin(), extra.end(), token) != extra.end()) return true;
  return !seq.params.ignore_eos && std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end();
}

void Engine::finish(Sequence& seq, FinishReason reason, SeqOutput& out) {
  if (reason != FinishReason::kStop && reason != FinishReason::kCancelled) {
    // Length limits end mid-text: emit whatever was held back.
    out.new_text += seq.held_text + seq.detok->flush();
    seq.held_text.clear();
  }
  seq.status = SeqStatus::kFinished;
  seq.finish_reason = reason;
  scheduler_.remove(&seq);
  out.finished = true;
  out.finish_reason = reason;
  out.prompt_tokens = seq.prompt_len;
  out.completion_tokens = seq.num_generated();
}

void Engine::on_token(Sequence& seq, int32_t token, SeqOutput& out) {
  seq.tokens.push_back(token);
  out.new_tokens.push_back(token);
  if (seq.num_generated() == 1) seq.first_token_time = Clock::now();
  ++stats_.generated_tokens;

  if (is_stop_token(seq, token)) return finish(seq, FinishReason::kStop, out);
  seq.held_text += seq.detok->push(token);

  // The earliest stop string ends the text; otherwise hold back any suffix that could still grow
  // into one.
  const auto& stops = seq.params.stop;
  size_t cut = std::string::npos;
  for (const auto& s : stops) cut = std::min(cut, seq.held_text.find(s));
  if (cut != std::string::npos) {
    out.new_text += seq.held_text.substr(0, cut);
    seq.held_text.clear();
    return finish(seq, FinishReason::kStop, out);
  }
  size_t hold = 0;
  for (const auto& s : stops) {
    for (size_t k = std::min(s.size() - 1, seq.held_text.size()); k > hold; --k) {
      if (seq.held_text.compare(seq.held_text.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
    }
  }
  out.new_text += seq.held_text.substr(0, seq.held_text.size() - hold);
  seq.held_text.erase(0, seq.held_text.size() - hold);

  if (seq.num_generated() >= seq.params.max_tokens || seq.len() >= max_model_len_) {
    finish(seq, FinishReason::kLength, out);
  }
}

std::vector<SeqOutput> Engine::step() {
  std::vector<SeqOutput> outputs = std::move(cancelled_);
  cancelled_.clear();
  ScheduledStep step = scheduler_.schedule();
  if (step.plan.seqs.empty()) return outputs;

  const auto t0 = Clock::now();
  std::vector<float> logits = runner_.run(step.plan);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  bool any_prefill = false;
  for (const auto& s : step.plan.seqs) {
    any_prefill |= !s.decode;
    if (!s.decode) stats_.prompt_tokens += s.q_len;
  }
  ++stats_.steps;
  stats_.preemptions += step.num_preempted;
  if (any_prefill) {
    stats_.prefill_seconds += seconds;
  } else {
    stats_.decode_seconds += seconds;
    ++stats_.decode_steps;
    stats_.decode_tokens += static_cast<int64_t>(step.plan.seqs.size());
  }

  const int vocab = model_->config().vocab_size;
  size_t logit_row = 0;
  std::vector<int64_t> done;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    Sequence& seq = *step.seqs[i];
    const SeqStep& s = step.plan.seqs[i];
    seq.kv.num_tokens = s.end_pos();
    if (!s.want_logits) continue;
    std::span<float> row(logits.data() + logit_row * vocab, vocab);
    ++logit_row;
    SeqOutput out;
    out.id = seq.id;
    // Models often pad their vocabulary past the tokenizer's; those ids are never sampled.
    const int32_t token = sample_token(row.first(std::min<size_t>(vocab, tokenizer_->vocab_size())),
                                       seq.params, seq.tokens, seq.rng);
    on_token(seq, token, out);
    if (seq.finished()) done.push_back(seq.id);
    outputs.push_back(std::move(out));
  }
  for (int64_t id : done) seqs_.erase(id);
  return outputs;
}

}  // namespace lserve
