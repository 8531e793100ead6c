// Allocator of page ids for one pool, with reference counts and a cache of freed pages whose
// content is known (prefix caching). Check-then-mutate: callers ask can_allocate(n) before
// allocate(n), so a failed admission changes nothing.
//
// A page is free, referenced (by one or more sequences), or cached: unreferenced but holding
// content registered with set_hash, findable by that hash until it is evicted. Cached pages cost
// nothing: allocation takes free pages first, then evicts cached ones, least recently released
// first.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace lserve {

// Identity of a page's content: a 128-bit hash, so that two different contents never share one
// in practice (2^-128 per pair); the map is keyed by `lo` and `hi` confirms.
struct PageHash {
  uint64_t lo = 0;
  uint64_t hi = 0;
  bool operator==(const PageHash&) const = default;
};

class PagePool {
 public:
  explicit PagePool(int num_pages);

  int num_pages() const { return num_pages_; }
  int num_free() const { return static_cast<int>(free_.size()); }
  int num_cached() const { return static_cast<int>(lru_.size()); }
  // Pages referenced by at least one sequence.
  int num_used() const { return num_pages_ - num_free() - num_cached(); }
  bool can_allocate(int n) const { return n <= num_free() + num_cached(); }

  // Takes n pages (free ones first, then evicted cached ones), each with one reference; throws
  // OutOfMemoryError when fewer are available (callers check first).
  std::vector<int32_t> allocate(int n);
  int32_t allocate_one();
  // Drops one reference to each page; an unreferenced page with registered content becomes
  // cached, others free. Throws on a page without references (a bookkeeping bug).
  void release(const std::vector<int32_t>& pages);
  void release_one(int32_t page);

  // The page holding content `h` (referenced or cached), or -1.
  int32_t find(const PageHash& h) const;
  // Adds a reference to a page find() returned; a cached page leaves the cache.
  void acquire(int32_t page);
  // Registers the content of a referenced, full page. A no-op when another page already holds
  // that content (two sequences computed the same page) or this page has content registered.
  void set_hash(int32_t page, const PageHash& h);
  int refs(int32_t page) const { return refs_[page]; }

 private:
  void forget_content(int32_t page);

  int num_pages_;
  std::vector<int32_t> free_;  // stack: the most recently freed page is reused first
  std::vector<int32_t> refs_;
  std::vector<PageHash> hash_;
  std::vector<uint8_t> hashed_;
  std::unordered_map<uint64_t, int32_t> by_hash_;  // PageHash::lo -> page
  std::list<int32_t> lru_;                         // cached pages, least recently released first
  std::vector<std::list<int32_t>::iterator> lru_pos_;
};

}  // namespace lserve
