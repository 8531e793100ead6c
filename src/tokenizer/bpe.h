// The BPE merge step: given the symbols of one pre-token (initially one token per byte), repeatedly
// merges the adjacent pair with the lowest merge rank, leftmost first among equal ranks (GPT-2, HF
// and llama.cpp all resolve ties this way), until no pair has a merge.
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace lserve {

class BpeMerges {
 public:
  // Records that `left right` merge into `merged` with priority `rank` (lower merges first). A pair
  // listed twice keeps its first (lowest) rank, as HF does.
  void add(int32_t left, int32_t right, int32_t merged, int32_t rank);

  // Reusable buffers, so that encoding a long text does not allocate per pre-token.
  struct Scratch {
    struct Symbol {
      int32_t id;
      int32_t prev;
      int32_t next;
    };
    struct Candidate {
      int32_t rank;
      int32_t left;   // symbol index
      int32_t right;  // symbol index, checked on pop to drop stale candidates
      int32_t left_id;
      int32_t right_id;
      int32_t merged;
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
  };

  // Replaces `ids` (token ids, -1 for a byte without a token: such symbols never merge) by the
  // merged sequence. O(n log n) in the number of symbols.
  void apply(std::vector<int32_t>& ids, Scratch& scratch) const;

  size_t size() const { return pairs_.size(); }

 private:
  struct Result {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  std::unordered_map<uint64_t, Result> pairs_;
};

}  // namespace lserve
