#include "tokenizer/bpe.h"

#include <algorithm>

namespace lserve {
namespace {

using Candidate = BpeMerges::Scratch::Candidate;

// std heap functions build a max-heap; "greater" here means "merges later".
bool merges_later(const Candidate& a, const Candidate& b) {
  if (a.rank != b.rank) return a.rank > b.rank;
  return a.left > b.left;
}

}  // namespace

void BpeMerges::add(int32_t left, int32_t right, int32_t merged, int32_t rank) {
  pairs_.try_emplace(key(left, right), Result{rank, merged});
}

void BpeMerges::apply(std::vector<int32_t>& ids, Scratch& scratch) const {
  if (ids.size() < 2) return;
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  symbols.clear();
  heap.clear();
  const auto n = static_cast<int32_t>(ids.size());
  for (int32_t i = 0; i < n; ++i) symbols.push_back({ids[i], i - 1, i + 1 < n ? i + 1 : -1});

  auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = pairs_.find(key(symbols[left].id, symbols[right].id));
    if (it == pairs_.end()) return;
    heap.push_back(
        {it->second.rank, left, right, symbols[left].id, symbols[right].id, it->second.merged});
    std::push_heap(heap.begin(), heap.end(), merges_later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), merges_later);
    const Candidate c = heap.back();
    heap.pop_back();
    Scratch::Symbol& left = symbols[c.left];
    // Stale if either side has merged since the candidate was queued: a merge always changes the
    // surviving symbol's id (to a longer token) and unlinks the absorbed one (id -> -2).
    if (left.id != c.left_id || left.next != c.right || symbols[c.right].id != c.right_id) continue;
    Scratch::Symbol& right = symbols[c.right];
    left.id = c.merged;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.id = -2;
    push_pair(left.prev);
    push_pair(c.left);
  }

  ids.clear();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace lserve
