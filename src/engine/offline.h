// Running a model over one token sequence outside the engine loop (no sampling, no scheduler):
// for logits checks, perplexity and the head profiler.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_dtype.h"
#include "model/model.h"

namespace lserve {

struct OfflineRunOptions {
  int chunk = 512;  // prefill chunk size (tokens per forward)
  int page_size = 16;
  bool all_logits = true;       // logits of every position, else only the last one
  int logits_from = 0;          // with all_logits: only positions >= this (a large vocabulary)
  bool scramble_pages = false;  // use pages out of order (tests exercise the page table)
  KvDtype kv_dtype = KvDtype::kAuto;
};

// Runs `tokens` through the model with dense attention (a model's sliding-window layers keep
// their windows) and returns logits [tokens.size() - logits_from or 1, vocab].
std::vector<float> sequence_logits(Model& model, Backend& backend,
                                   const std::vector<int32_t>& tokens,
                                   const OfflineRunOptions& options);

}  // namespace lserve
