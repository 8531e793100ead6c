// What one forward step computes, built once by the scheduler and passed by const reference to
// every op: the flattened new tokens of all scheduled sequences and, per sequence, where its KV
// lives. Page tables are CSR arrays (FlashInfer style) so a device backend can copy them as-is.
#pragma once

#include <cstdint>
#include <vector>

namespace lserve {

struct SeqStep {
  int64_t seq_id = 0;
  int32_t q_offset = 0;   // row of this sequence's first new token in the flattened batch
  int32_t q_len = 0;      // new tokens this step (a prefill chunk, or 1 when decoding)
  int32_t start_pos = 0;  // position of the first new token = tokens already in the cache
  bool decode = false;    // a generation step (one token after the prompt)
  bool want_logits = false;  // the logits of the last new token are needed for sampling
  int32_t end_pos() const { return start_pos + q_len; }
};

struct StepPlan {
  std::vector<int32_t> token_ids;  // [n_tokens] new tokens of all sequences, in seqs order
  std::vector<int32_t> positions;  // [n_tokens]
  std::vector<SeqStep> seqs;
  // Retrieval-pool page table: seq s owns pages page_indices[page_indptr[s] .. page_indptr[s+1]),
  // page k holding positions [k*P, (k+1)*P); it covers every position up to end_pos().
  std::vector<int32_t> page_indptr;
  std::vector<int32_t> page_indices;
  std::vector<int32_t> logits_rows;  // flattened rows whose logits are returned, in seqs order

  int32_t n_tokens() const { return static_cast<int32_t>(token_ids.size()); }
  const int32_t* pages_of(size_t s) const { return page_indices.data() + page_indptr[s]; }
  int32_t num_pages_of(size_t s) const { return page_indptr[s + 1] - page_indptr[s]; }
};

}  // namespace lserve
