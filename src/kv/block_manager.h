// Gives sequences the pages their tokens need in both pools (check-then-mutate: can_grow before
// grow) and takes them back when a sequence finishes, is cancelled or is preempted. Streaming
// heads keep only the sink blocks and the blocks of the trailing window: trim_window frees blocks
// that no present or future query can see.
//
// Prefix caching: a full block whose KV prefill wrote is registered by its content (the tokens up
// to its end, chained, and a salt for whatever else shapes the KV); released, its pages stay
// cached until their memory is needed, and a later sequence whose prompt starts with the same
// tokens takes them instead of recomputing. With streaming heads a prefix is reusable only where
// the streaming pool still holds the sink blocks and the window blocks its next query sees.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kv/page_pool.h"
#include "kv/sequence_kv.h"

namespace lserve {

struct BlockManagerConfig {
  int page_size = 64;
  int num_pages = 0;         // retrieval pool
  int num_stream_pages = 0;  // streaming pool (0 when there are no streaming heads)
  int sink_tokens = 0;
  int num_sel_slots = 0;  // page-selection slots, one per running sequence at most
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
  // Returns kv's pages (the last blocks first, so that a cached prefix loses its end before its
  // start) and empties kv.
  void release(SequenceKv& kv);

  // --- prefix caching ---
  // The content identity of blocks [0, n_blocks) of `tokens` under `salt`; block i's covers
  // tokens [0, (i + 1) P). `from` continues a chain (its blocks are not recomputed).
  std::vector<PageHash> block_hashes(std::span<const int32_t> tokens, int n_blocks, uint64_t salt,
                                     std::vector<PageHash> from = {}) const;
  // For an empty kv: takes the cached pages of the longest run of whole blocks at the start of
  // `tokens`, at most max_tokens tokens, that a query right after the run can use (its retrieval
  // pages; in the streaming pool the sink blocks and the blocks within `window` of that query).
  // The run is cut to a multiple of align_tokens (dynamic prefill sparsity estimates whole query
  // blocks, so a reused prefix must end where a block does). Returns the tokens reused, now
  // kv.num_tokens (0: nothing changed).
  int32_t reuse_prefix(SequenceKv& kv, std::span<const int32_t> tokens, int32_t max_tokens,
                       int32_t window, uint64_t salt, int32_t align_tokens = 1);
  // Registers the content of kv's full blocks that lie within the first `cacheable` tokens (those
  // whose KV prefill wrote) and are not registered yet.
  void register_full_blocks(SequenceKv& kv, std::span<const int32_t> tokens, int32_t cacheable,
                            uint64_t salt);

 private:
  // kv's streaming-pool page of block b, or -1 (freed from the window, or none).
  int32_t stream_page(const SequenceKv& kv, int32_t b) const;
  // The first window block a query at position q keeps (trim_window's rule).
  int32_t window_start(int64_t q, int32_t window) const;

  BlockManagerConfig config_;
  PagePool pool_;
  PagePool stream_pool_;
  PagePool sel_slots_;
};

}  // namespace lserve
