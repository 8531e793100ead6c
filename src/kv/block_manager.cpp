#include "kv/block_manager.h"

#include <algorithm>

#include "core/error.h"

namespace lserve {

BlockManager::BlockManager(const BlockManagerConfig& config)
    : config_(config),
      pool_(config.num_pages),
      stream_pool_(config.num_stream_pages),
      sel_slots_(config.num_sel_slots) {
  LSERVE_CHECK(config.page_size > 0, "page size must be positive, got {}", config.page_size);
  LSERVE_CHECK(config.sink_tokens >= 0, "sink tokens must not be negative");
}

int BlockManager::sink_blocks() const {
  return (config_.sink_tokens + config_.page_size - 1) / config_.page_size;
}

void BlockManager::trim_window(SequenceKv& kv, int32_t first_query, int32_t window) {
  if (!has_streaming()) return;
  const int64_t first_visible = static_cast<int64_t>(first_query) - window + 1;
  if (first_visible <= 0) return;
  const auto keep_from = static_cast<int32_t>(first_visible / config_.page_size);
  while (!kv.window_pages.empty() && kv.window_first < keep_from) {
    stream_pool_.release_one(kv.window_pages.front());
    kv.window_pages.erase(kv.window_pages.begin());
    ++kv.window_first;
  }
  if (kv.window_pages.empty()) kv.window_first = std::max(kv.window_first, keep_from);
}

int BlockManager::pages_needed(const SequenceKv& kv, int32_t num_tokens) const {
  const int want = (num_tokens + config_.page_size - 1) / config_.page_size;
  return std::max(0, want - static_cast<int>(kv.pages.size()));
}

int BlockManager::stream_pages_needed(const SequenceKv& kv, int32_t num_tokens) const {
  if (!has_streaming()) return 0;
  const int blocks = (num_tokens + config_.page_size - 1) / config_.page_size;
  const int sinks = std::min(blocks, sink_blocks());
  const int first = std::max(kv.window_first, sink_blocks());
  const int window = std::max(0, blocks - first);
  return std::max(0, sinks - static_cast<int>(kv.sink_pages.size())) +
         std::max(0, window - static_cast<int>(kv.window_pages.size()));
}

bool BlockManager::can_grow(const SequenceKv& kv, int32_t num_tokens) const {
  return pool_.can_allocate(pages_needed(kv, num_tokens)) &&
         stream_pool_.can_allocate(stream_pages_needed(kv, num_tokens)) &&
         (kv.sel_slot >= 0 || config_.num_sel_slots == 0 || sel_slots_.can_allocate(1));
}

void BlockManager::grow(SequenceKv& kv, int32_t num_tokens) {
  if (!can_grow(kv, num_tokens)) {
    throw OutOfMemoryError("KV cache exhausted: no free pages for this sequence");
  }
  const auto fresh = pool_.allocate(pages_needed(kv, num_tokens));
  kv.pages.insert(kv.pages.end(), fresh.begin(), fresh.end());
  if (has_streaming()) {
    const int blocks = (num_tokens + config_.page_size - 1) / config_.page_size;
    while (static_cast<int>(kv.sink_pages.size()) < std::min(blocks, sink_blocks())) {
      kv.sink_pages.push_back(stream_pool_.allocate_one());
    }
    kv.window_first = std::max(kv.window_first, sink_blocks());
    while (kv.window_first + static_cast<int>(kv.window_pages.size()) < blocks) {
      kv.window_pages.push_back(stream_pool_.allocate_one());
    }
  }
  if (kv.sel_slot < 0 && config_.num_sel_slots > 0) kv.sel_slot = sel_slots_.allocate_one();
}

void BlockManager::release(SequenceKv& kv) {
  pool_.release(kv.pages);
  stream_pool_.release(kv.sink_pages);
  stream_pool_.release(kv.window_pages);
  if (kv.sel_slot >= 0) sel_slots_.release_one(kv.sel_slot);
  kv = SequenceKv{};
}

}  // namespace lserve
