// What one forward step computes, built once by the scheduler and passed by const reference to
// every op: the flattened new tokens of all scheduled sequences and, per sequence, where its KV
// lives and how its heads attend. Page tables are CSR arrays (FlashInfer style) so a device
// backend can copy them as they are.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "backend/sampling.h"
#include "sparse/prefill_blocks.h"

namespace lserve {

struct SeqStep {
  int64_t seq_id = 0;
  int32_t q_offset = 0;      // row of this sequence's first new token in the flattened batch
  int32_t q_len = 0;         // new tokens this step (a prefill chunk, or 1 when decoding)
  int32_t start_pos = 0;     // position of the first new token = tokens already in the cache
  bool decode = false;       // a generation step (one token after the prompt)
  bool want_logits = false;  // the logits of the last new token are needed for sampling
  // Streaming heads see keys j with j < sink or j > i - stream_window (INT_MAX: all, i.e. dense).
  int32_t stream_window = INT_MAX;
  // Streaming-pool table: stream_sink_blocks sink pages, then window pages from block
  // stream_window_first on.
  int32_t stream_sink_blocks = 0;
  int32_t stream_window_first = 0;
  // Retrieval heads while decoding: read at most this many tokens through page selection;
  // <= 0 means dense.
  int32_t token_budget = 0;
  // Retrieval heads while prefilling: keep the key blocks holding this share of each query
  // block's estimated attention (sparse/prefill_blocks.h); 0: every key.
  double prefill_sparsity = 0;
  // Query blocks whose last query of this chunk is at or past this position attend to every key
  // block (the prompt's dense tail, SparseAttentionConfig::prefill_dense_tail).
  int32_t prefill_dense_from = INT_MAX;
  bool refresh_selection = false;  // recompute the page selection at this step
  int32_t sel_slot = -1;           // where this sequence's selection is kept

  int32_t end_pos() const { return start_pos + q_len; }
  // The retrieval heads of `layer` read selected pages (not all pages) at this step.
  bool uses_selection(int layer, int skip_layers) const {
    return decode && token_budget > 0 && end_pos() > token_budget && layer >= skip_layers;
  }
  // The retrieval heads attend to their estimated key blocks (dynamic prefill sparsity) at this
  // step, in every layer (the layers whose decode skips page selection too: keeping them dense
  // measured no more accurate, docs/accuracy.md).
  bool uses_prefill_blocks() const {
    return prefill_sparsity > 0 && !decode && q_len >= kSparsePrefillMinQueries;
  }
  // The keep threshold (keep_prefill_blocks) of the query block whose last query of this chunk
  // is at `last`.
  double prefill_threshold(int32_t last) const {
    return last >= prefill_dense_from ? 1.0 : prefill_sparsity;
  }
};

struct StepPlan {
  std::vector<int32_t> token_ids;  // [n_tokens] new tokens of all sequences, in seqs order
  std::vector<int32_t> positions;  // [n_tokens]
  std::vector<SeqStep> seqs;
  // Retrieval-pool page table: seq s owns pages page_indices[page_indptr[s] .. page_indptr[s+1]),
  // page k holding positions [k*P, (k+1)*P); it covers every position up to end_pos().
  std::vector<int32_t> page_indptr;
  std::vector<int32_t> page_indices;
  // Streaming-pool page table, same CSR form: sink pages then window pages (see SeqStep).
  std::vector<int32_t> stream_indptr;
  std::vector<int32_t> stream_indices;
  std::vector<int32_t> logits_rows;  // flattened rows whose logits are returned, in seqs order
  // How to sample each logits row (parallel to logits_rows), and the per-token logit edits
  // (bias and penalties) the rows point into. Filled by the engine after scheduling.
  std::vector<SampleRow> sampling;
  std::vector<LogitEdit> logit_edits;

  // A decode step run from a recording (CUDA graph) of `padded_rows` sequence slots: every
  // sequence decodes one token, rows past n_tokens are padding, and device kernels derive their
  // work from the step's tables, so one recording serves every such step. Set by ModelRunner.
  bool device_planned = false;
  int32_t padded_rows = 0;

  int32_t n_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  // Activation rows of the step: its tokens, or the padded slot count.
  int32_t rows() const { return std::max(n_tokens(), padded_rows); }
  const int32_t* pages_of(size_t s) const { return page_indices.data() + page_indptr[s]; }
  int32_t num_pages_of(size_t s) const { return page_indptr[s + 1] - page_indptr[s]; }
  // Streaming page holding block b of sequence s, or -1 when that block is not kept.
  int32_t stream_page(size_t s, int32_t b) const {
    const SeqStep& q = seqs[s];
    const int32_t base = stream_indptr[s];
    if (b < q.stream_sink_blocks) return stream_indices[base + b];
    const int32_t w = b - q.stream_window_first;
    const int32_t n_window = stream_indptr[s + 1] - base - q.stream_sink_blocks;
    if (b < q.stream_window_first || w >= n_window) return -1;
    return stream_indices[base + q.stream_sink_blocks + w];
  }
};

}  // namespace lserve
