#include "sparse/page_selection.h"

#include <algorithm>
#include <numeric>

namespace lserve {

float quest_bound(const float* q, const float* kmin, const float* kmax, int head_dim) {
  float s = 0.0f;
  for (int c = 0; c < head_dim; ++c) s += std::max(q[c] * kmin[c], q[c] * kmax[c]);
  return s;
}

std::vector<int32_t> select_blocks(const std::vector<float>& block_scores, int32_t others) {
  const auto n = static_cast<int32_t>(block_scores.size());
  if (n == 0) return {};
  std::vector<int32_t> cand(n - 1);
  std::iota(cand.begin(), cand.end(), 0);
  const int32_t k = std::clamp(others, 0, n - 1);
  std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), [&](int32_t a, int32_t b) {
    return block_scores[a] > block_scores[b] || (block_scores[a] == block_scores[b] && a < b);
  });
  cand.resize(k);
  cand.push_back(n - 1);
  std::sort(cand.begin(), cand.end());
  return cand;
}

}  // namespace lserve
