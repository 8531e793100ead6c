#include "kv/block_manager.h"

#include "core/error.h"

namespace lserve {

BlockManager::BlockManager(int num_pages, int page_size) : page_size_(page_size), pool_(num_pages) {
  LSERVE_CHECK(page_size > 0, "page size must be positive, got {}", page_size);
}

int BlockManager::pages_needed(const SequenceKv& kv, int32_t num_tokens) const {
  const int want = (num_tokens + page_size_ - 1) / page_size_;
  return std::max(0, want - static_cast<int>(kv.pages.size()));
}

bool BlockManager::can_grow(const SequenceKv& kv, int32_t num_tokens) const {
  return pool_.can_allocate(pages_needed(kv, num_tokens));
}

void BlockManager::grow(SequenceKv& kv, int32_t num_tokens) {
  const auto fresh = pool_.allocate(pages_needed(kv, num_tokens));
  kv.pages.insert(kv.pages.end(), fresh.begin(), fresh.end());
}

void BlockManager::release(SequenceKv& kv) {
  pool_.release(kv.pages);
  kv.pages.clear();
  kv.num_tokens = 0;
}

}  // namespace lserve
