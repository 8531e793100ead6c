// A request's state inside the engine: its tokens, how many of them are in the KV cache, its
// pages, its sampler state and its detokenized output.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/request.h"
#include "kv/sequence_kv.h"
#include "tokenizer/detokenizer.h"

namespace lserve {

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  using Clock = std::chrono::steady_clock;

  int64_t id = 0;
  std::vector<int32_t> tokens;  // prompt followed by generated tokens
  int32_t prompt_len = 0;
  SamplingParams params;
  uint64_t seed = 0;  // the sampler's Philox key; draw i of the sequence uses counter i
  std::unordered_map<int32_t, int32_t> output_counts;  // generated tokens (OpenAI penalties)
  SeqStatus status = SeqStatus::kWaiting;
  FinishReason finish_reason = FinishReason::kNone;
  SequenceKv kv;  // pages and how many tokens they hold
  int32_t num_preemptions = 0;
  SparseOverride sparse;
  bool synthetic_prefill = false;  // see Request
  int32_t decode_steps = 0;        // decode steps run so far (the selector's reuse clock)
  bool selection_valid = false;    // the selection slot holds this sequence's current selection

  std::unique_ptr<IncrementalDetokenizer> detok;
  std::string held_text;  // decoded text not yet emitted (could be the start of a stop string)

  Clock::time_point arrival;
  Clock::time_point first_token_time;

  int32_t len() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_generated() const { return len() - prompt_len; }
  // Tokens not yet in the KV cache (the whole prompt at first, then the last sampled token).
  int32_t num_uncached() const { return len() - kv.num_tokens; }
  // Prefix caching: what besides the tokens shapes this sequence's KV (its pages are shared only
  // with sequences of the same salt). Dense attention changes what the streaming heads see.
  uint64_t kv_salt() const { return sparse.dense ? 1 : 0; }
  bool finished() const { return status == SeqStatus::kFinished; }
};

}  // namespace lserve
