// Gives sequences the pages their tokens need in both pools (check-then-mutate: can_grow before
// grow) and takes them back when a sequence finishes, is cancelled or is preempted. Streaming
// heads keep only the sink blocks and the blocks of the trailing window: trim_window frees blocks
// that no present or future query can see.
#pragma once

#include "kv/page_pool.h"
#include "kv/sequence_kv.h"

namespace lserve {

struct BlockManagerConfig {
  int page_size = 64;
  int num_pages = 0;         // retrieval pool
  int num_stream_pages = 0;  // streaming pool (0 when there are no streaming heads)
  int sink_tokens = 0;
  int num_sel_slots = 0;     // page-selection slots, one per running sequence at most
};

class BlockManager {
 public:
  explicit BlockManager(const BlockManagerConfig& config);

  int page_size() const { return config_.page_size; }
  bool has_streaming() const { return config_.num_stream_pages > 0; }
  const PagePool& pool() const { return pool_; }
  const PagePool& stream_pool() const { return stream_pool_; }
  const PagePool& sel_slots() const { return sel_slots_; }
  int sink_blocks() const;

  // Frees the window blocks wholly before position first_query - window + 1: a query at
  // first_query or later cannot see them. Never fails.
  void trim_window(SequenceKv& kv, int32_t first_query, int32_t window);

  // Pages each pool must provide for `kv` to hold `num_tokens` tokens.
  int pages_needed(const SequenceKv& kv, int32_t num_tokens) const;
  int stream_pages_needed(const SequenceKv& kv, int32_t num_tokens) const;
  bool can_grow(const SequenceKv& kv, int32_t num_tokens) const;
  // Adds pages (and a selection slot) so `kv` can hold `num_tokens`; throws OutOfMemoryError,
  // changing nothing, when a pool is short.
  void grow(SequenceKv& kv, int32_t num_tokens);
  void release(SequenceKv& kv);

 private:
  BlockManagerConfig config_;
  PagePool pool_;
  PagePool stream_pool_;
  PagePool sel_slots_;
};

}  // namespace lserve
