// Every knob of LServe-style sparse attention, validated in one place. Semantics are those of
// docs/sparse-attention.md ("Visibility", "Page selection").
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "sparse/prefill_blocks.h"

namespace lserve {

enum class SelectorGranularity { kKvHead, kQueryHead };

struct SparseAttentionConfig {
  bool dense = false;               // every head retrieval, no page selection (the baseline)
  std::string head_pattern;         // DuoAttention full_attention_heads.tsv; empty: model default
  double static_sparsity = 0.5;     // share of KV heads that become streaming heads
  int sink_tokens = 128;            // streaming heads: first tokens always visible
  int local_tokens = 256;           // streaming heads: trailing window while decoding
  int prefill_local_tokens = 8192;  // streaming heads: trailing window while prefilling
  int page_size = 64;               // P: tokens per physical page
  int logical_page_size = 16;       // L: tokens per logical page (selection granularity)
  int token_budget = 4096;          // retrieval heads read at most this many tokens per decode step
  int selector_interval = 4;        // recompute the page selection every this many decode steps
  // Between those steps, also recompute a selection head's pages as soon as the cosine of one of
  // its query heads' current query with the query the selection was made for falls below this
  // (0: off). Reuse then holds only while the query still resembles the one it was made for.
  float selector_drift = 0.0f;
  SelectorGranularity granularity = SelectorGranularity::kKvHead;
  int selector_skip_layers = 2;  // layers below this decode densely
  // Retrieval heads while prefilling: each block of queries attends only to the key blocks whose
  // estimated share of its attention reaches this much mass, plus the sink and diagonal blocks
  // (sparse/prefill_blocks.h; 0: off, every key; 1: every block, through the same path). Not with
  // `dense`, and not for requests that ask for dense attention.
  double prefill_sparsity = 0.0;
  // How those shares are estimated (sparse/prefill_blocks.h); only with prefill_sparsity.
  PrefillEstimate prefill_estimate = PrefillEstimate::kAntidiagonal;
  // Under prefill_sparsity, a query block whose last query of the chunk lies in the prompt's last
  // this-many positions (where a long-context prompt's question usually is; chunks end on blocks
  // wherever the step's budget holds one) attends to every key block: with 256, the
  // GPU eval lost 0.7 points against static sparsity at threshold 0.95, 4.2 without
  // (docs/accuracy.md).
  int prefill_dense_tail = 256;

  // Throws Error with a message naming the flag when values are inconsistent.
  void validate() const;
  // The first position of a prompt's dense tail (SeqStep::prefill_dense_from); INT_MAX: none.
  int32_t prefill_dense_from(int32_t prompt_len) const {
    return prefill_dense_tail > 0 ? std::max(0, prompt_len - prefill_dense_tail) : INT_MAX;
  }
  // Pages a selection holds at most: budget / P (the current page included).
  int max_selected_pages() const { return token_budget / page_size; }
  std::string summary() const;
};

std::string_view granularity_name(SelectorGranularity g);
SelectorGranularity parse_granularity(const std::string& name);

}  // namespace lserve
