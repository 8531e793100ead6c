// Which pages hold one sequence's KV. Owned by the sequence, managed by the BlockManager.
#pragma once

#include <cstdint>
#include <vector>

namespace lserve {

struct SequenceKv {
  std::vector<int32_t> pages;  // retrieval pool; pages[k] holds positions [k*P, (k+1)*P)
  int32_t num_tokens = 0;      // tokens whose KV has been written
};

}  // namespace lserve
