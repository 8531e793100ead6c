// Free-list allocator of page ids for one pool. Check-then-mutate: callers ask can_allocate(n)
// before allocate(n), so a failed admission changes nothing.
#pragma once

#include <cstdint>
#include <vector>

namespace lserve {

class PagePool {
 public:
  explicit PagePool(int num_pages);

  int num_pages() const { return num_pages_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_used() const { return num_pages_ - num_free(); }
  bool can_allocate(int n) const { return n <= num_free(); }

  // Takes n pages; throws OutOfMemoryError when fewer are free (callers check first).
  std::vector<int32_t> allocate(int n);
  int32_t allocate_one();
  // Returns pages to the pool; throws on a double free or a foreign id (a bookkeeping bug).
  void release(const std::vector<int32_t>& pages);
  void release_one(int32_t page);

 private:
  int num_pages_;
  std::vector<int32_t> free_;      // stack: the most recently freed page is reused first
  std::vector<uint8_t> in_use_;
};

}  // namespace lserve
