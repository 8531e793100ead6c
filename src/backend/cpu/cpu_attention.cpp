#include "backend/cpu/cpu_attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/vec.h"

namespace lserve {

namespace {

// Query rows [r0, r0 + nr) of one attention call, on the calling thread: scores by GEMM over the
// keys up to the tile's last query, a masked softmax per row, then the GEMM with the values.
void attend_tile(const AttendArgs& a, int r0, int nr) {
  const int d = a.head_dim;
  const int32_t last_q = *std::max_element(a.q_pos + r0, a.q_pos + r0 + nr);
  // Keys arrive in position order, so the visible ones end at the first key past last_q.
  const int nk = static_cast<int>(std::upper_bound(a.k_pos, a.k_pos + a.nk, last_q) - a.k_pos);
  std::vector<float> qbuf(static_cast<size_t>(nr) * d);
  std::vector<float> scores(static_cast<size_t>(nr) * nk);
  std::vector<float> obuf(static_cast<size_t>(nr) * d);
  for (int r = 0; r < nr; ++r) {
    std::memcpy(&qbuf[static_cast<size_t>(r) * d], a.q + (r0 + r) * a.q_stride, d * sizeof(float));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, d, a.scale, qbuf.data(), d, a.k, d,
              0.0f, scores.data(), nk);
  for (int r = 0; r < nr; ++r) {
    float* s = &scores[static_cast<size_t>(r) * nk];
    const int32_t qp = a.q_pos[r0 + r];
    // Keys past the query's own position are never visible: their weights are zero.
    const int end = static_cast<int>(std::upper_bound(a.k_pos, a.k_pos + nk, qp) - a.k_pos);
    // Keys before the first visible one past the sink are masked (streaming heads); none are when
    // the window reaches back to position 0.
    if (static_cast<int64_t>(qp) - a.vis.window >= 0) {
      for (int j = 0; j < end; ++j) {
        if (!a.vis.visible(a.k_pos[j], qp)) s[j] = -std::numeric_limits<float>::infinity();
      }
    }
    const float mx = vec::max(s, end);
    LSERVE_ASSERT(mx > -std::numeric_limits<float>::infinity());  // the query sees itself
    vec::scale(s, end, 1.0f / vec::exp_sum(s, end, mx));
    std::fill(s + end, s + nk, 0.0f);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, nk, 1.0f, scores.data(), nk, a.v, d,
              0.0f, obuf.data(), d);
  for (int r = 0; r < nr; ++r) {
    std::memcpy(a.out + (r0 + r) * a.out_stride, &obuf[static_cast<size_t>(r) * d],
                d * sizeof(float));
  }
}

// Row tiles of at most 128 queries (and ~16 MB of scores whatever the context length); each tile
// only looks at keys up to its last query's position, which halves causal prefill work.
int row_tile(const AttendArgs& a) { return std::max(1, std::min({a.nq, 128, (1 << 22) / a.nk})); }

}  // namespace

void attend(const AttendArgs& a, ThreadPool& pool) {
  LSERVE_ASSERT(a.nk > 0 && a.nq > 0 && a.head_dim > 0);
  const int tile = row_tile(a);
  const int n_tiles = (a.nq + tile - 1) / tile;
  pool.parallel_for(n_tiles, [&](int64_t t) {
    const int r0 = static_cast<int>(t) * tile;
    attend_tile(a, r0, std::min(tile, a.nq - r0));
  });
}

void attend_serial(const AttendArgs& a) {
  LSERVE_ASSERT(a.nk > 0 && a.nq > 0 && a.head_dim > 0);
  const int tile = row_tile(a);
  for (int r0 = 0; r0 < a.nq; r0 += tile) attend_tile(a, r0, std::min(tile, a.nq - r0));
}

void attend_direct(const AttendArgs& a) {
  LSERVE_ASSERT(a.nk > 0 && a.nq > 0 && a.head_dim > 0);
  const int d = a.head_dim;
  std::vector<float> scores(a.nk);
  std::vector<float> acc(d);
  for (int r = 0; r < a.nq; ++r) {
    const float* q = a.q + r * a.q_stride;
    const int32_t qp = a.q_pos[r];
    float mx = -std::numeric_limits<float>::infinity();
    for (int j = 0; j < a.nk; ++j) {
      scores[j] = a.vis.visible(a.k_pos[j], qp)
                      ? vec::dot(q, a.k + static_cast<int64_t>(j) * d, d) * a.scale
                      : -std::numeric_limits<float>::infinity();
      mx = std::max(mx, scores[j]);
    }
    LSERVE_ASSERT(mx > -std::numeric_limits<float>::infinity());
    std::fill(acc.begin(), acc.end(), 0.0f);
    double sum = 0;
    for (int j = 0; j < a.nk; ++j) {
      if (scores[j] == -std::numeric_limits<float>::infinity()) continue;
      const float p = std::exp(scores[j] - mx);
      sum += p;
      vec::axpy(p, a.v + static_cast<int64_t>(j) * d, acc.data(), d);
    }
    const auto inv = static_cast<float>(1.0 / sum);
    float* o = a.out + r * a.out_stride;
    for (int c = 0; c < d; ++c) o[c] = acc[c] * inv;
  }
}

}  // namespace lserve
