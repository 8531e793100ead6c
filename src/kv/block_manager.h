// Gives sequences the pages their tokens need (check-then-mutate: can_grow before grow) and takes
// them back when a sequence finishes, is cancelled or is preempted.
#pragma once

#include "kv/page_pool.h"
#include "kv/sequence_kv.h"

namespace lserve {

class BlockManager {
 public:
  BlockManager(int num_pages, int page_size);

  int page_size() const { return page_size_; }
  const PagePool& pool() const { return pool_; }

  // Pages `kv` needs to hold `num_tokens` tokens, beyond the ones it has.
  int pages_needed(const SequenceKv& kv, int32_t num_tokens) const;
  bool can_grow(const SequenceKv& kv, int32_t num_tokens) const;
  // Adds pages so `kv` can hold `num_tokens` tokens; throws OutOfMemoryError (changing nothing)
  // when the pool is short.
  void grow(SequenceKv& kv, int32_t num_tokens);
  void release(SequenceKv& kv);

 private:
  int page_size_;
  PagePool pool_;
};

}  // namespace lserve
