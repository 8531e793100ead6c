#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "core/error.h"
#include "core/log.h"
#include "engine/step_sampling.h"
#include "sparse/head_pattern.h"
#include "sparse/head_pattern_lookup.h"

namespace lserve {
namespace {

using Clock = std::chrono::steady_clock;

HeadMap choose_sparse_heads(const LoadedModel& m, const SparseAttentionConfig& sp);

// The sparse config's classes, then the model's own sliding-window layers: those are streaming
// heads of exactly the model's window in every mode, dense included.
HeadMap choose_heads(const LoadedModel& m, const SparseAttentionConfig& sp) {
  HeadMap heads = choose_sparse_heads(m, sp);
  heads.set_model_windows(m.config.layer_windows);
  if (heads.max_model_window() > 0) {
    int windowed = 0;
    for (int32_t w : heads.window) windowed += w > 0;
    log::info(
        "{} of {} layers attend within the model's sliding window: their heads are "
        "streaming heads of that window, exact in every mode",
        windowed, m.config.n_layers);
  }
  return heads;
}

HeadMap choose_sparse_heads(const LoadedModel& m, const SparseAttentionConfig& sp) {
  const ModelConfig& c = m.config;
  if (sp.dense) return HeadMap::all_retrieval(c.n_layers, c.n_kv_heads);
  const std::optional<std::string> path =
      sp.head_pattern.empty() ? default_head_pattern(m.source) : std::optional(sp.head_pattern);
  if (!path) {
    log::info(
        "no head pattern for {}: every KV head is a retrieval head (page selection only); "
        "`lserve profile-heads` makes one",
        m.source);
    return HeadMap::all_retrieval(c.n_layers, c.n_kv_heads);
  }
  const HeadPattern pattern = HeadPattern::load(*path, c.n_layers, c.n_kv_heads);
  HeadMap heads = HeadMap::from_flags(pattern.retrieval_flags(sp.static_sparsity));
  int streaming = 0;
  for (int l = 0; l < c.n_layers; ++l) streaming += heads.count(l, HeadClass::kStreaming);
  log::info("head pattern {}: {} of {} KV heads are streaming heads (static sparsity {})", *path,
            streaming, c.n_layers * c.n_kv_heads, sp.static_sparsity);
  return heads;
}

// Splits the KV memory between the pools in proportion to what one sequence of the maximum
// length needs from each, so neither runs out first in the common case.
KvCacheConfig kv_config(const ModelConfig& m, const EngineConfig& c, const HeadMap& heads,
                        const KvRowBytes& row) {
  const SparseAttentionConfig& sp = c.sparse;
  sp.validate();
  KvCacheConfig k;
  k.n_layers = m.n_layers;
  k.n_heads = m.n_heads;
  k.n_kv_heads = m.n_kv_heads;
  k.head_dim = m.head_dim;
  k.sparse = sp;
  k.dtype = c.kv_dtype;
  k.num_sel_slots = sp.dense ? 0 : c.scheduler.max_num_seqs;
  const KvPageBytes pb = kv_page_bytes(heads, sp, row);
  const int P = sp.page_size;
  const int64_t max_len = c.max_model_len > 0 ? c.max_model_len : m.max_context;
  // Sink and window pages of one sequence: the sparse streaming heads' (if any) and the model's
  // sliding windows share the pool's pages.
  const bool sparse_streaming = heads.has_sparse_streaming();
  const int64_t window =
      std::max<int64_t>(sparse_streaming ? std::min<int64_t>(sp.prefill_local_tokens, max_len) : 0,
                        std::min<int64_t>(heads.max_model_window(), max_len));
  const int64_t stream_bound = (sparse_streaming ? (sp.sink_tokens + P - 1) / P : 0) +
                               (window + c.scheduler.max_num_batched_tokens + P - 1) / P + 2;
  if (pb.streaming > 0) {
    if (c.num_stream_pages > 0) {
      k.num_stream_pages = c.num_stream_pages;
    } else {
      const double stream_need = static_cast<double>(stream_bound) * pb.streaming;
      const double retr_need = static_cast<double>((max_len + P - 1) / P) * pb.retrieval;
      const double share = stream_need / (stream_need + retr_need);
      k.num_stream_pages = std::max<int64_t>(
          stream_bound, static_cast<int64_t>(share * c.kv_cache_bytes / pb.streaming));
    }
  }
  if (c.num_pages > 0) {
    k.num_pages = c.num_pages;
  } else {
    const int64_t left = c.kv_cache_bytes - static_cast<int64_t>(k.num_stream_pages) * pb.streaming;
    k.num_pages =
        pb.retrieval > 0 ? static_cast<int>(std::max<int64_t>(0, left / pb.retrieval)) : 0;
  }
  if (pb.retrieval > 0 && k.num_pages < 2) {
    // Say where the memory went and the smallest budget that works: with streaming heads, their
    // pool's floor (sink, prefill window and one step's tokens) comes first.
    const int64_t stream_bytes = static_cast<int64_t>(k.num_stream_pages) * pb.streaming;
    const int64_t need_mib = (stream_bytes + 2 * pb.retrieval + (1 << 20) - 1) >> 20;
    fail(
        "--kv-cache-mib {} is too small: the cache needs at least {} MiB here ({}2 retrieval "
        "pages of {} KiB); raise --kv-cache-mib{}",
        c.kv_cache_bytes >> 20, need_mib,
        pb.streaming > 0 ? fmt::format("the streaming heads' pool: {} pages, {} MiB, for the "
                                       "sink, the prefill window and one step of tokens; then ",
                                       k.num_stream_pages, stream_bytes >> 20)
                         : "",
        pb.retrieval >> 10,
        pb.streaming > 0 ? ", or lower --prefill-local-tokens or --max-num-batched-tokens" : "");
  }
  return k;
}

std::unique_ptr<KvCache> make_cache(Backend& backend, const LoadedModel& m, const EngineConfig& c) {
  LSERVE_CHECK(backend.supports_kv_dtype(c.kv_dtype),
               "--kv-cache-dtype {} is not implemented on the {} backend yet",
               kv_dtype_name(c.kv_dtype), backend.name());
  LSERVE_CHECK(backend.supports_head_dim(m.config.head_dim),
               "the {} backend does not support this model's head_dim {} (it takes {})",
               backend.name(), m.config.head_dim, backend.head_dims_supported());
  LSERVE_CHECK(c.sparse.prefill_sparsity == 0 ||
                   backend.supports_prefill_sparsity(c.kv_dtype, m.config.head_dim,
                                                     c.sparse.prefill_estimate),
               "--prefill-sparsity runs on the {} backend only {} (this model's head_dim is {}, "
               "the estimate {})",
               backend.name(), backend.prefill_sparsity_supported(), m.config.head_dim,
               prefill_estimate_name(c.sparse.prefill_estimate));
  HeadMap heads = choose_heads(m, c.sparse);
  const KvCacheConfig kc = kv_config(m.config, c, heads,
                                     kv_row_bytes(backend.kv_storage_dtype(c.kv_dtype),
                                                  backend.compute_dtype(), m.config.head_dim));
  return std::make_unique<KvCache>(backend, kc, std::move(heads));
}

BlockManagerConfig block_config(const KvCache& cache) {
  BlockManagerConfig b;
  b.page_size = cache.page_size();
  b.num_pages = cache.config().num_pages;
  b.num_stream_pages = cache.config().num_stream_pages;
  // Only the sparse streaming heads have a sink; the model's windowed layers have none.
  b.sink_tokens = cache.heads().has_sparse_streaming() ? cache.sparse().sink_tokens : 0;
  b.num_sel_slots = cache.config().num_sel_slots;
  return b;
}

SchedulerConfig scheduler_config(SchedulerConfig c, const HeadMap& heads) {
  c.model_window = heads.max_model_window();
  c.sparse_streaming = heads.has_sparse_streaming();
  return c;
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
    case FinishReason::kNone:
      return "";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
  }
  return "";
}

Engine::Engine(std::unique_ptr<Backend> backend, LoadedModel loaded, const EngineConfig& config)
    : backend_(std::move(backend)),
      tokenizer_(make_tokenizer(loaded)),
      model_(make_model(loaded.config, std::move(loaded.weights))),
      cache_(make_cache(*backend_, loaded, config)),
      blocks_(block_config(*cache_)),
      scheduler_(scheduler_config(config.scheduler, cache_->heads()), config.sparse, blocks_) {
  RunnerConfig rc;
  rc.max_step_tokens = config.scheduler.max_num_batched_tokens;
  rc.max_seqs = config.scheduler.max_num_seqs;
  rc.enforce_eager = config.enforce_eager;
  runner_ = std::make_unique<ModelRunner>(*model_, *backend_, *cache_, rc);
  const ModelConfig& mc = model_->config();
  max_model_len_ = config.max_model_len > 0 ? config.max_model_len : mc.max_context;
  if (max_model_len_ > mc.max_context) {
    log::warn(
        "the maximum model length {} is longer than the context the model was trained for ({}); "
        "positions past it may give poor output",
        max_model_len_, mc.max_context);
  }
  const int64_t pool_tokens =
      static_cast<int64_t>(blocks_.pool().num_pages()) * cache_->page_size();
  if (pool_tokens < max_model_len_) {
    log::warn("KV cache holds {} tokens, less than the context length {}; limiting it to {}",
              pool_tokens, max_model_len_, pool_tokens);
    max_model_len_ = static_cast<int>(pool_tokens);
  }
  stop_ids_ = tokenizer_->stop_token_ids();
  log::info("attention: {}", cache_->sparse().summary());
  log::info(
      "KV cache: {:.1f} MiB; retrieval pool {} pages ({:.1f} MiB), streaming pool {} pages "
      "({:.1f} MiB) of {} tokens; max model length {}",
      cache_->bytes() / 1048576.0, blocks_.pool().num_pages(),
      cache_->bytes(HeadClass::kRetrieval) / 1048576.0, blocks_.stream_pool().num_pages(),
      cache_->bytes(HeadClass::kStreaming) / 1048576.0, cache_->page_size(), max_model_len_);
}

Engine::~Engine() = default;

void Engine::validate(const Request& req) const {
  req.params.validate();
  const SparseAttentionConfig& sp = cache_->sparse();
  const int page = cache_->page_size();
  LSERVE_CHECK(req.sparse.token_budget >= 0 && req.sparse.token_budget <= sp.token_budget &&
                   req.sparse.token_budget % page == 0 &&
                   (req.sparse.token_budget == 0 || req.sparse.token_budget >= 2 * page),
               "token_budget {} must be a multiple of the page size {} between {} and the engine's "
               "budget {}",
               req.sparse.token_budget, page, 2 * page, sp.token_budget);
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
  for (const auto& [t, bias] : req.params.logit_bias) {
    LSERVE_CHECK(t < model_->config().vocab_size,
                 "logit_bias token id {} is outside the vocabulary ({})", t,
                 model_->config().vocab_size);
  }
}

int64_t Engine::submit(Request req) {
  validate(req);
  const int64_t prompt_len = static_cast<int64_t>(req.prompt.size());
  auto seq = std::make_unique<Sequence>();
  seq->id = next_id_++;
  seq->tokens = std::move(req.prompt);
  seq->prompt_len = static_cast<int32_t>(prompt_len);
  seq->params = std::move(req.params);
  seq->sparse = req.sparse;
  seq->synthetic_prefill = req.synthetic_prefill;
  if (seq->params.seed) {
    seq->seed = *seq->params.seed;
  } else {
    std::random_device rd;
    seq->seed = static_cast<uint64_t>(rd()) << 32 | rd();
  }
  seq->detok = std::make_unique<IncrementalDetokenizer>(*tokenizer_);
  seq->arrival = Clock::now();
  const int64_t id = seq->id;
  scheduler_.add(seq.get());
  seqs_.emplace(id, std::move(seq));
  return id;
}

void Engine::fill_kv_random(uint64_t seed) {
  KvCache& c = *cache_;
  for (int l = 0; l < c.config().n_layers; ++l) {
    for (HeadClass cls : {HeadClass::kRetrieval, HeadClass::kStreaming}) {
      for (Tensor* t : {&c.k(cls, l), &c.v(cls, l)}) {
        if (!t->empty()) backend_->fill_random(*t, seed++, 1.0f);
      }
      // FP8 pools: rows of uniform(-1, 1) values, as the bf16 pools hold.
      for (Tensor* t : {&c.k_scale(cls, l), &c.v_scale(cls, l)}) {
        if (!t->empty()) backend_->fill(*t, 1.0f / 448.0f);
      }
    }
    if (c.logical_page_size() == 1) continue;  // the bounds are the keys themselves
    for (Tensor* t : {&c.kmin(l), &c.kmax(l)}) {
      if (!t->empty()) backend_->fill_random(*t, seed++, 1.0f);
    }
  }
  backend_->synchronize();
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
  return !seq.params.ignore_eos &&
         std::find(stop_ids_.begin(), stop_ids_.end(), token) != stop_ids_.end();
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
  ++seq.output_counts[token];
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
  // Models often pad their vocabulary past the tokenizer's; those ids are never sampled.
  const auto vocab =
      static_cast<int32_t>(std::min<size_t>(model_->config().vocab_size, tokenizer_->vocab_size()));
  add_sampling(step.plan, step.seqs, vocab);
  const std::span<const SampledToken> sampled = runner_->run(step.plan);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  bool any_prefill = false;
  const ModelConfig& mc = model_->config();
  for (const auto& s : step.plan.seqs) {
    any_prefill |= !s.decode;
    if (!s.decode) stats_.prompt_tokens += s.q_len;
    if (s.decode) {
      stats_.decode_kv +=
          decode_kv_traffic(s, cache_->heads(), mc.n_heads, cache_->sparse(), cache_->row_bytes());
    }
  }
  stats_.peak_pages = std::max(stats_.peak_pages, blocks_.pool().num_used());
  stats_.peak_stream_pages = std::max(stats_.peak_stream_pages, blocks_.stream_pool().num_used());
  ++stats_.steps;
  stats_.preemptions += step.num_preempted;
  if (any_prefill) {
    stats_.prefill_seconds += seconds;
  } else {
    stats_.decode_seconds += seconds;
    ++stats_.decode_steps;
    stats_.decode_tokens += static_cast<int64_t>(step.plan.seqs.size());
  }

  size_t logit_row = 0;
  std::vector<int64_t> done;
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    Sequence& seq = *step.seqs[i];
    const SeqStep& s = step.plan.seqs[i];
    seq.kv.num_tokens = s.end_pos();
    if (scheduler_.config().enable_prefix_caching && !seq.synthetic_prefill) {
      blocks_.register_full_blocks(seq.kv, seq.tokens, seq.prompt_len, seq.kv_salt());
    }
    if (!s.want_logits) continue;
    const SampledToken& st = sampled[logit_row++];
    SeqOutput out;
    out.id = seq.id;
    if (seq.params.logprobs >= 0) {
      TokenLogprob lp;
      lp.token = st.token;
      lp.logprob = st.logprob;
      for (int j = 0; j < st.n_top; ++j) lp.top.emplace_back(st.top_ids[j], st.top_logprobs[j]);
      out.logprobs.push_back(std::move(lp));
    }
    on_token(seq, st.token, out);
    if (seq.finished()) done.push_back(seq.id);
    outputs.push_back(std::move(out));
  }
  for (int64_t id : done) seqs_.erase(id);
  return outputs;
}

}  // namespace lserve
