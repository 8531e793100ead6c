#include "engine/scheduler.h"

#include <algorithm>
#include <climits>

#include "core/error.h"
#include "core/log.h"
#include "sparse/prefill_blocks.h"

namespace lserve {

Scheduler::Scheduler(SchedulerConfig config, const SparseAttentionConfig& sparse,
                     BlockManager& blocks)
    : config_(config), sparse_(sparse), blocks_(blocks) {
  LSERVE_CHECK(config.max_num_seqs >= 1, "max_num_seqs must be >= 1, got {}", config.max_num_seqs);
  LSERVE_CHECK(config.max_num_batched_tokens >= 1, "max_num_batched_tokens must be >= 1, got {}",
               config.max_num_batched_tokens);
}

void Scheduler::add(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::remove(Sequence* seq) {
  std::erase(running_, seq);
  std::erase(waiting_, seq);
  blocks_.release(seq->kv);
}

void Scheduler::preempt(Sequence* seq) {
  log::debug("preempting sequence {} ({} tokens cached)", seq->id, seq->kv.num_tokens);
  std::erase(running_, seq);
  blocks_.release(seq->kv);
  seq->status = SeqStatus::kWaiting;
  seq->selection_valid = false;
  ++seq->num_preemptions;
  waiting_.push_front(seq);
}

int32_t Scheduler::stream_window(const Sequence& seq) const {
  if (seq.sparse.dense) return INT_MAX;
  const bool decoding = seq.kv.num_tokens >= seq.prompt_len;
  return decoding ? sparse_.local_tokens : sparse_.prefill_local_tokens;
}

int32_t Scheduler::prefill_align(const Sequence& seq) const {
  return sparse_.prefill_sparsity > 0 && !seq.sparse.dense ? kPrefillBlock : 1;
}

int32_t Scheduler::aligned_chunk(const Sequence& seq, int32_t n) const {
  const int32_t align = prefill_align(seq);
  const int32_t start = seq.kv.num_tokens, end = start + n;
  if (align == 1 || end >= seq.prompt_len) return n;
  const int32_t cut = end / align * align - start;
  return cut > 0 ? cut : n;  // less than a block left in the budget: a partial one
}

int32_t Scheduler::keep_window(const Sequence& seq) const {
  const int32_t sparse = config_.sparse_streaming ? stream_window(seq) : 0;
  return std::max(sparse, config_.model_window);
}

bool Scheduler::make_room(Sequence* seq, int32_t n) {
  blocks_.trim_window(seq->kv, seq->kv.num_tokens, keep_window(*seq));
  return blocks_.can_grow(seq->kv, seq->kv.num_tokens + n);
}

void Scheduler::add_to_plan(ScheduledStep& step, Sequence* seq, int32_t n) {
  blocks_.grow(seq->kv, seq->kv.num_tokens + n);
  StepPlan& p = step.plan;
  if (p.page_indptr.empty()) p.page_indptr.push_back(0);
  if (p.stream_indptr.empty()) p.stream_indptr.push_back(0);
  const SequenceKv& kv = seq->kv;
  SeqStep s;
  s.seq_id = seq->id;
  s.q_offset = p.n_tokens();
  s.q_len = n;
  s.start_pos = kv.num_tokens;
  s.decode = s.start_pos >= seq->prompt_len;
  s.want_logits = s.end_pos() == seq->len();
  s.stream_window = stream_window(*seq);
  s.stream_sink_blocks = static_cast<int32_t>(kv.sink_pages.size());
  s.stream_window_first = kv.window_first;
  s.sel_slot = kv.sel_slot;
  if (!sparse_.dense && !seq->sparse.dense) {
    s.token_budget = seq->sparse.token_budget > 0 ? seq->sparse.token_budget : sparse_.token_budget;
    s.prefill_sparsity = sparse_.prefill_sparsity;
    s.prefill_dense_from = sparse_.prefill_dense_from(seq->prompt_len);
  }
  // The selector runs on the reuse clock, and whenever the slot holds no current selection
  // (first sparse step, after a dense step or a preemption).
  const bool sparse_step = s.decode && s.token_budget > 0 && s.end_pos() > s.token_budget;
  s.refresh_selection =
      sparse_step && (!seq->selection_valid || seq->decode_steps % sparse_.selector_interval == 0);
  seq->selection_valid = sparse_step;
  if (s.decode) ++seq->decode_steps;

  for (int32_t i = 0; i < n; ++i) {
    p.token_ids.push_back(seq->tokens[s.start_pos + i]);
    p.positions.push_back(s.start_pos + i);
  }
  p.page_indices.insert(p.page_indices.end(), kv.pages.begin(), kv.pages.end());
  p.page_indptr.push_back(static_cast<int32_t>(p.page_indices.size()));
  p.stream_indices.insert(p.stream_indices.end(), kv.sink_pages.begin(), kv.sink_pages.end());
  p.stream_indices.insert(p.stream_indices.end(), kv.window_pages.begin(), kv.window_pages.end());
  p.stream_indptr.push_back(static_cast<int32_t>(p.stream_indices.size()));
  if (s.want_logits) p.logits_rows.push_back(s.q_offset + n - 1);
  p.seqs.push_back(s);
  step.seqs.push_back(seq);
}

Sequence* Scheduler::pick_victim(const ScheduledStep& step, Sequence* fallback) const {
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    if (*it != fallback && std::find(step.seqs.begin(), step.seqs.end(), *it) == step.seqs.end()) {
      return *it;
    }
  }
  return fallback;
}

int32_t Scheduler::prefill_chunk(const Sequence& seq, int budget) const {
  int32_t n = std::min(seq.num_uncached(), budget);
  const bool others_wait =
      !waiting_.empty() && running_.size() < static_cast<size_t>(config_.max_num_seqs);
  if (others_wait) {
    const int cap = config_.long_prefill_token_threshold > 0
                        ? config_.long_prefill_token_threshold
                        : std::max(1, config_.max_num_batched_tokens / 2);
    n = std::min(n, cap);
  }
  return aligned_chunk(seq, n);
}

ScheduledStep Scheduler::schedule() {
  ScheduledStep step;
  int budget = config_.max_num_batched_tokens;

  // Decodes go first so that a long prompt being prefilled never stalls the running streams,
  // whatever the order of admission.
  std::vector<Sequence*> order;
  order.reserve(running_.size());
  for (Sequence* seq : running_) {
    if (seq->kv.num_tokens >= seq->prompt_len) order.push_back(seq);
  }
  for (Sequence* seq : running_) {
    if (seq->kv.num_tokens < seq->prompt_len) order.push_back(seq);
  }
  for (Sequence* seq : order) {
    if (budget <= 0) break;
    if (seq->status != SeqStatus::kRunning) continue;  // preempted earlier in this step
    const int32_t n = prefill_chunk(*seq, budget);
    LSERVE_ASSERT(n > 0);
    bool self_preempted = false;
    while (!make_room(seq, n)) {
      Sequence* victim = pick_victim(step, seq);
      preempt(victim);
      ++step.num_preempted;
      if (victim == seq) {
        self_preempted = true;
        break;
      }
    }
    if (self_preempted) continue;
    add_to_plan(step, seq, n);
    budget -= n;
  }

  // Admit new work only when nothing had to be preempted: memory is tight otherwise.
  while (step.num_preempted == 0 && budget > 0 && !waiting_.empty() &&
         running_.size() < static_cast<size_t>(config_.max_num_seqs)) {
    Sequence* seq = waiting_.front();
    // A synthetic prefill takes the cache's contents as the KV of all prompt tokens but the last.
    const int32_t skip = seq->synthetic_prefill ? seq->prompt_len - 1 - seq->kv.num_tokens : 0;
    if (skip > 0) {
      blocks_.trim_window(seq->kv, seq->prompt_len - 1, keep_window(*seq));
      if (!blocks_.can_grow(seq->kv, seq->prompt_len)) break;
      blocks_.grow(seq->kv, seq->prompt_len - 1);
      seq->kv.num_tokens = seq->prompt_len - 1;
    }
    // A prompt starting with cached pages skips their tokens. Its last token is always computed
    // (its logits start the generation), and only prompt tokens, whose KV prefill wrote, are
    // cached at all.
    int32_t reused = 0;
    if (config_.enable_prefix_caching && !seq->synthetic_prefill && seq->kv.num_tokens == 0) {
      reused = blocks_.reuse_prefix(seq->kv, seq->tokens, seq->prompt_len - 1, keep_window(*seq),
                                    seq->kv_salt(), prefill_align(*seq));
    }
    const int32_t n = aligned_chunk(*seq, std::min(seq->num_uncached(), budget));
    if (!make_room(seq, n)) {
      if (reused > 0) blocks_.release(seq->kv);  // back to the cache, to be found again
      break;
    }
    if (config_.enable_prefix_caching && !seq->synthetic_prefill) {
      prefix_stats_.queries += seq->prompt_len;
      prefix_stats_.hits += reused;
    }
    waiting_.pop_front();
    seq->status = SeqStatus::kRunning;
    running_.push_back(seq);
    add_to_plan(step, seq, n);
    budget -= n;
  }
  return step;
}

}  // namespace lserve
