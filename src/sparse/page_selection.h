// The page-selection policy shared by every backend (Quest bound, hierarchical pages;
// docs/sparse-attention.md "Page selection"): pure functions over host arrays, used by the CPU
// backend and as the oracle of device selectors.
#pragma once

#include <cstdint>
#include <vector>

namespace lserve {

// Upper bound of q.k over a logical page's keys: sum_c max(q_c * kmin_c, q_c * kmax_c).
float quest_bound(const float* q, const float* kmin, const float* kmax, int head_dim);

// The blocks to read: the current (last) block of n_blocks, plus the `others` best-scoring other
// blocks (higher score first; equal scores: lower block index first). Returned ascending.
std::vector<int32_t> select_blocks(const std::vector<float>& block_scores, int32_t others);

}  // namespace lserve
