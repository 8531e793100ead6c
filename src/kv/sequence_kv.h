// Which pages hold one sequence's KV, in both pools. Owned by the sequence, managed by the
// BlockManager.
#pragma once

#include <cstdint>
#include <vector>

#include "kv/page_pool.h"

namespace lserve {

struct SequenceKv {
  // Retrieval pool: pages[k] holds positions [k*P, (k+1)*P) for the retrieval heads.
  std::vector<int32_t> pages;
  // Streaming pool: the sink blocks [0, sink_pages.size()) and a sliding run of window blocks
  // starting at block window_first; blocks between them were freed when they left the window.
  std::vector<int32_t> sink_pages;
  std::vector<int32_t> window_pages;
  int32_t window_first = 0;
  int32_t num_tokens = 0;  // tokens whose KV has been written
  int32_t sel_slot = -1;   // page-selection slot (reused selections live there), -1: none
  // Prefix caching: the content identity of blocks [0, block_hashes.size()), registered with the
  // pools (BlockManager::register_full_blocks), each hash chained on the one before.
  std::vector<PageHash> block_hashes;

  int32_t stream_pages() const {
    return static_cast<int32_t>(sink_pages.size() + window_pages.size());
  }
};

}  // namespace lserve
