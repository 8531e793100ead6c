// Plain structs the host fills once per step and kernels read: the device copy of a StepPlan.
// No CUDA types here, so host planning code compiles with the normal C++ compiler.
#pragma once

#include <cstdint>

namespace lserve::cuda {

struct SeqInfo {
  int32_t q_offset;
  int32_t q_len;
  int32_t start_pos;
  int32_t stream_window;
  int32_t stream_sink_blocks;
  int32_t stream_window_first;
  int32_t token_budget;
  int32_t sel_slot;
  int32_t page_base;    // offset of the sequence's retrieval pages in page_indices
  int32_t stream_base;  // offset of its streaming pages in stream_indices
  int32_t n_stream;     // streaming pages it holds
};

// Device pointers into the step's uploaded tables.
struct DeviceStep {
  const int32_t* token_ids;
  const int32_t* positions;
  const SeqInfo* seqs;
  const int32_t* page_indices;
  const int32_t* stream_indices;
  int32_t n_tokens;
  int32_t n_seqs;
};

// Which keys an attention work item reads, as an index space over the head's page list:
//   kAllPages: retrieval head, every position (key k is position k);
//   kStreamPages: streaming head, the sink pages then the window pages;
//   kSelectedPages: retrieval head decoding sparsely, the selected pages then the current one.
enum KeyKind : int32_t { kAllPages = 0, kStreamPages = 1, kSelectedPages = 2 };

// Tile rows: row r is query q_first + r / rg of the sequence, for query head head0 + r % rg
// (rg = the group size, or 1 when each query head has its own page selection).
struct AttnWork {
  int32_t seq;
  int32_t kv_head;
  int32_t kind;
  int32_t q_first;  // first query (index among the sequence's new tokens)
  int32_t q_count;  // queries in this item (rows = q_count * rg)
  int32_t head0;
  int32_t rg;
  int32_t k_begin[2];  // two key-index ranges [begin, end); an empty range has begin >= end
  int32_t k_end[2];
  int32_t partial;  // -1: write the output; else the partial-result slot (split-KV)
};

// Combines the partial results [first, first + count) of one item's rows.
struct MergeItem {
  int32_t seq;
  int32_t q_first;
  int32_t q_count;
  int32_t head0;
  int32_t rg;
  int32_t first;
  int32_t count;
  int32_t pad;
};

// One CTA of the RoPE/append kernel: positions [pos_begin, pos_end) of one sequence, all within
// one logical page, for one KV head (blockIdx.y).
struct AppendGroup {
  int32_t seq;
  int32_t pos_begin;
  int32_t pos_end;
  int32_t pad;
};

}  // namespace lserve::cuda
