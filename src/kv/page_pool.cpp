#include "kv/page_pool.h"

#include <algorithm>

#include "core/error.h"

namespace lserve {

PagePool::PagePool(int num_pages)
    : num_pages_(num_pages),
      refs_(std::max(num_pages, 0), 0),
      hash_(std::max(num_pages, 0)),
      hashed_(std::max(num_pages, 0), 0),
      lru_pos_(std::max(num_pages, 0)) {
  LSERVE_CHECK(num_pages >= 0, "page pool size {} is negative", num_pages);
  free_.reserve(num_pages);
  // Hand out low ids first.
  for (int i = num_pages - 1; i >= 0; --i) free_.push_back(i);
}

int32_t PagePool::allocate_one() {
  int32_t p;
  if (!free_.empty()) {
    p = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    p = lru_.front();
    lru_.pop_front();
    forget_content(p);
  } else {
    throw OutOfMemoryError("KV page pool exhausted");
  }
  refs_[p] = 1;
  return p;
}

std::vector<int32_t> PagePool::allocate(int n) {
  if (!can_allocate(n)) {
    throw OutOfMemoryError(fmt::format("KV page pool exhausted: {} pages requested, {} free of {}",
                                       n, num_free() + num_cached(), num_pages_));
  }
  std::vector<int32_t> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(allocate_one());
  return out;
}

void PagePool::release_one(int32_t page) {
  LSERVE_ASSERT(page >= 0 && page < num_pages_);
  LSERVE_ASSERT(refs_[page] > 0);
  if (--refs_[page] > 0) return;
  if (hashed_[page]) {
    lru_pos_[page] = lru_.insert(lru_.end(), page);
  } else {
    free_.push_back(page);
  }
}

void PagePool::release(const std::vector<int32_t>& pages) {
  for (auto p : pages) release_one(p);
}

int32_t PagePool::find(const PageHash& h) const {
  const auto it = by_hash_.find(h.lo);
  return it != by_hash_.end() && hash_[it->second] == h ? it->second : -1;
}

void PagePool::acquire(int32_t page) {
  LSERVE_ASSERT(page >= 0 && page < num_pages_ && hashed_[page]);
  if (refs_[page]++ == 0) lru_.erase(lru_pos_[page]);
}

void PagePool::set_hash(int32_t page, const PageHash& h) {
  LSERVE_ASSERT(page >= 0 && page < num_pages_ && refs_[page] > 0);
  if (hashed_[page] || by_hash_.contains(h.lo)) return;
  hash_[page] = h;
  hashed_[page] = 1;
  by_hash_.emplace(h.lo, page);
}

void PagePool::forget_content(int32_t page) {
  if (!hashed_[page]) return;
  by_hash_.erase(hash_[page].lo);
  hashed_[page] = 0;
}

}  // namespace lserve
