// Plain structs the host fills once per step and kernels read: the device copy of a StepPlan,
// and the rules both the host planner and device-planned launches use to turn it into work. No
// CUDA types here, so host planning code compiles with the normal C++ compiler.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace lserve::cuda {

enum SeqFlags : int32_t { kSeqDecode = 1, kSeqRefresh = 2 };

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
  int32_t flags;        // SeqFlags; a padding entry of a device-planned step has q_len 0
};

// Device pointers into the step's uploaded tables. Only pointers: a CUDA graph records them once,
// and every replay reads the step written there since (counts live in the tables).
struct DeviceStep {
  const int32_t* token_ids;
  const int32_t* positions;
  const SeqInfo* seqs;
  const int32_t* page_indices;
  const int32_t* stream_indices;
};

// Whether the retrieval heads of `layer` read selected pages (not all pages) at this step.
LSERVE_HD inline bool uses_selection(const SeqInfo& s, int32_t layer, int32_t skip_layers) {
  return (s.flags & kSeqDecode) && s.token_budget > 0 && s.start_pos + s.q_len > s.token_budget &&
         layer >= skip_layers;
}

// Which keys an attention work item reads, as an index space over the head's page list:
//   kAllPages: retrieval head, every position (key k is position k);
//   kStreamPages: streaming head, the sink pages then the window pages;
//   kSelectedPages: retrieval head decoding sparsely, the selected pages then the current one;
//   kKeptBlocks: retrieval head in a block-sparse prefill chunk, the 128-key blocks its query
//   block keeps (the list the keep kernel wrote: AttnParams::kept, row AttnWork::list).
enum KeyKind : int32_t { kAllPages = 0, kStreamPages = 1, kSelectedPages = 2, kKeptBlocks = 3 };

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
  int32_t list;     // kKeptBlocks: the item's row of the kept-block lists
};

// Two ranges of key indices [begin, end) over a head's page list (an empty range has
// begin >= end).
struct KeyRanges {
  int32_t begin[2] = {0, 0};
  int32_t end[2] = {0, 0};
  LSERVE_HD int32_t keys() const {
    return (end[0] > begin[0] ? end[0] - begin[0] : 0) +
           (end[1] > begin[1] ? end[1] - begin[1] : 0);
  }
};

// Key ranges a head of `kind` needs for queries at positions [qa, qb] of sequence s. kAllPages:
// every position up to qb. kSelectedPages: an upper bound, the selection (budget_cap tokens at
// most) plus the current page; the kernel clips it to the stored list. kStreamPages: the sink
// pages, then the window pages the queries can still see.
LSERVE_HD inline KeyRanges key_ranges(const SeqInfo& s, int32_t kind, int32_t qa, int32_t qb,
                                      int32_t P, int32_t budget_cap) {
  KeyRanges r;
  if (kind == kAllPages) {
    r.end[0] = qb + 1;
  } else if (kind == kSelectedPages) {
    const int32_t budget = s.token_budget < budget_cap ? s.token_budget : budget_cap;
    r.end[0] = (budget / P + 1) * P;
  } else {
    const int32_t ns = s.stream_sink_blocks;
    const int32_t n_window = s.n_stream - ns;
    r.end[0] = ns * P < qb + 1 ? ns * P : qb + 1;
    if (n_window > 0) {
      const int64_t first = int64_t{qa} - s.stream_window + 1;
      const int64_t first_visible = first > 0 ? first : 0;
      const int32_t wf = s.stream_window_first;
      const int32_t bv = static_cast<int32_t>(first_visible / P);
      const int32_t bw = wf > bv ? wf : bv;
      const int32_t bl = qb / P < wf + n_window - 1 ? qb / P : wf + n_window - 1;
      if (bl >= bw && qb >= bw * P) {
        r.begin[1] = (ns + bw - wf) * P;
        r.end[1] = (ns + bl - wf) * P + (P - 1 < qb - bl * P ? P - 1 : qb - bl * P) + 1;
      }
    }
  }
  return r;
}

// A decode launch planned on the device (for CUDA graphs): CTA (x, y) takes unit x = (sequence,
// KV head, query head within the group) and split y of that unit's keys. Units of padding
// entries, of query heads that share their KV head's item, and splits past the unit's keys do
// nothing. Every replay derives the same kind of work the host planner would from the step's
// tables, so the grid depends only on the number of sequence slots.
struct DecodeGrid {
  int32_t n_kv_heads;
  int32_t group;           // query heads per KV head
  int32_t units_per_head;  // group with query-head selection (each head its own pages), else 1
  int32_t splits;          // CTAs per unit (gridDim.y)
  int32_t min_split_keys;  // a split never takes fewer keys than this (start-up cost)
  int32_t key_tile;        // keys per tile of the decode kernel: splits are whole tiles
  int32_t layer;
  int32_t skip_layers;
  int32_t page_size;
  int32_t budget_cap;
  int32_t per_query_head;
};

// Keys per split of a unit with `keys` keys: whole key tiles, at least min_split_keys.
LSERVE_HD inline int32_t decode_chunk(const DecodeGrid& g, int32_t keys) {
  const int32_t even = (keys + g.splits - 1) / g.splits;
  const int32_t want = even > g.min_split_keys ? even : g.min_split_keys;
  return (want + g.key_tile - 1) / g.key_tile * g.key_tile;
}

// The work of CTA (unit, split): false when it has none. *pieces: how many splits of the unit
// hold keys (1: the item writes the output itself; more: partial results to merge, in slots
// unit * splits + split).
LSERVE_HD inline bool decode_work(const DecodeGrid& g, const SeqInfo* seqs,
                                  const int32_t* head_class, int32_t unit, int32_t split,
                                  AttnWork* w, int32_t* pieces) {
  const int32_t per_seq = g.n_kv_heads * g.units_per_head;
  const int32_t seq = unit / per_seq;
  const int32_t h = (unit % per_seq) / g.units_per_head;
  const int32_t u = unit % g.units_per_head;
  const SeqInfo& s = seqs[seq];
  if (s.q_len != 1) return false;  // padding (decode items hold one query)
  const bool streaming = head_class[h] != 0;
  const bool selected = !streaming && uses_selection(s, g.layer, g.skip_layers);
  const bool per_head = selected && g.per_query_head;
  if (!per_head && u > 0) return false;
  w->seq = seq;
  w->kv_head = h;
  w->kind = streaming ? kStreamPages : (selected ? kSelectedPages : kAllPages);
  w->q_first = 0;
  w->q_count = 1;
  w->head0 = h * g.group + u;
  w->rg = per_head ? 1 : g.group;
  const KeyRanges r = key_ranges(s, w->kind, s.start_pos, s.start_pos, g.page_size, g.budget_cap);
  const int32_t keys = r.keys();
  const int32_t chunk = decode_chunk(g, keys);
  *pieces = keys > 0 ? (keys + chunk - 1) / chunk : 1;
  if (split >= *pieces) return false;
  // Split y covers keys [y * chunk, (y + 1) * chunk) of range 0 followed by range 1.
  const int32_t len0 = r.end[0] > r.begin[0] ? r.end[0] - r.begin[0] : 0;
  const int32_t a = split * chunk, b = a + chunk;
  for (int i = 0; i < 2; ++i) {
    const int32_t off = i == 0 ? 0 : len0;
    const int32_t len = i == 0 ? len0 : (r.end[1] > r.begin[1] ? r.end[1] - r.begin[1] : 0);
    const int32_t lo = a - off > 0 ? a - off : 0;
    const int32_t hi = b - off < len ? b - off : len;
    w->k_begin[i] = r.begin[i] + lo;
    w->k_end[i] = hi > lo ? r.begin[i] + hi : r.begin[i] + lo;
  }
  w->partial = *pieces > 1 ? unit * g.splits + split : -1;
  return true;
}

// Keys per block of dynamic block-sparse prefill (sparse/prefill_blocks.h kPrefillBlock).
constexpr int kKeptBlockKeys = 128;

// Dynamic block-sparse prefill (prefill_blocks.cuh; the rules in sparse/prefill_blocks.h): one
// item per (query block of a prefill chunk, retrieval KV head). Query rows [r0, r1) of the chunk
// (positions start_pos + r) lie in one 128-position block; their keys are positions 0 .. the
// last row's, in the paged pool. Kept lists hold at most kPrefillKeepMaxBlocks blocks (1M
// positions).
constexpr int kPrefillKeepMaxBlocks = 8192;
struct PrefillMassItem {
  int32_t q_offset;   // token row of the chunk's first query
  int32_t start_pos;  // its position
  int32_t r0, r1;     // the item's rows of the chunk
  int32_t page_base;  // the sequence's first entry in page_indices
  int32_t kv_head;
  double threshold;  // the keep rule's (SeqStep::prefill_threshold), as the CPU compares it
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
