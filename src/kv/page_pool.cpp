#include "kv/page_pool.h"

#include "core/error.h"

namespace lserve {

PagePool::PagePool(int num_pages) : num_pages_(num_pages), in_use_(num_pages, 0) {
  LSERVE_CHECK(num_pages >= 0, "page pool size {} is negative", num_pages);
  free_.reserve(num_pages);
  // Hand out low ids first.
  for (int i = num_pages - 1; i >= 0; --i) free_.push_back(i);
}

int32_t PagePool::allocate_one() {
  if (free_.empty()) throw OutOfMemoryError("KV page pool exhausted");
  const int32_t p = free_.back();
  free_.pop_back();
  in_use_[p] = 1;
  return p;
}

std::vector<int32_t> PagePool::allocate(int n) {
  if (!can_allocate(n)) {
    throw OutOfMemoryError(fmt::format("KV page pool exhausted: {} pages requested, {} free of {}",
                                       n, num_free(), num_pages_));
  }
  std::vector<int32_t> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back(allocate_one());
  return out;
}

void PagePool::release_one(int32_t page) {
  LSERVE_ASSERT(page >= 0 && page < num_pages_);
  LSERVE_ASSERT(in_use_[page] == 1);
  in_use_[page] = 0;
  free_.push_back(page);
}

void PagePool::release(const std::vector<int32_t>& pages) {
  for (auto p : pages) release_one(p);
}

}  // namespace lserve
