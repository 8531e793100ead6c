// What a client asks for, and what the engine reports back each step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/logprobs.h"
#include "engine/sampling_params.h"

namespace lserve {

// Per-request changes to the engine's sparse attention (validated by Engine::submit).
struct SparseOverride {
  bool dense = false;    // every head sees every token (streaming heads keep all their pages)
  int token_budget = 0;  // > 0: a smaller page-selection budget than the engine's
};

struct Request {
  std::vector<int32_t> prompt;  // token ids (templates and BOS already applied)
  SamplingParams params;
  SparseOverride sparse;
  // Benchmarks only: the KV of all prompt tokens but the last is taken as whatever the cache
  // pages hold (Engine::fill_kv_random) instead of computed, so decoding at a long context can be
  // timed without paying for its prefill. The output is meaningless.
  bool synthetic_prefill = false;
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };
std::string_view finish_reason_name(FinishReason r);  // "stop", "length", ... as in the OpenAI API

struct SeqOutput {
  int64_t id = 0;
  std::vector<int32_t> new_tokens;
  std::vector<TokenLogprob> logprobs;  // parallel to new_tokens when params.logprobs >= 0
  std::string new_text;  // complete UTF-8, with stop strings and held-back prefixes removed
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;  // set with kError
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

}  // namespace lserve
