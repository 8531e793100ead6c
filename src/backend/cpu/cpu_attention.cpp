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

void attend(const AttendArgs& a, ThreadPool& pool) {
  LSERVE_ASSERT(a.nk > 0 && a.nq > 0 && a.head_dim > 0);
  const int d = a.head_dim;
  // Row tiles of at most 128 queries (and ~16 MB of scores whatever the context length); each
  // tile only looks at keys up to its last query's position, which halves causal prefill work.
  const int tile = std::max(1, std::min({a.nq, 128, (1 << 22) / a.nk}));
  std::vector<float> qbuf(static_cast<size_t>(tile) * d);
  std::vector<float> scores(static_cast<size_t>(tile) * a.nk);
  std::vector<float> obuf(static_cast<size_t>(tile) * d);
  for (int r0 = 0; r0 < a.nq; r0 += tile) {
    const int nr = std::min(tile, a.nq - r0);
    const int32_t last_q = *std::max_element(a.q_pos + r0, a.q_pos + r0 + nr);
    // Keys arrive in position order, so the visible ones end at the first key past last_q.
    const int nk = static_cast<int>(std::upper_bound(a.k_pos, a.k_pos + a.nk, last_q) - a.k_pos);
    for (int r = 0; r < nr; ++r) {
      std::memcpy(&qbuf[static_cast<size_t>(r) * d], a.q + (r0 + r) * a.q_stride, d * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, d, a.scale, qbuf.data(), d, a.k,
                d, 0.0f, scores.data(), nk);
    pool.parallel_for(nr, [&](int64_t r) {
      float* s = &scores[static_cast<size_t>(r) * nk];
      const int32_t qp = a.q_pos[r0 + r];
      float mx = -std::numeric_limits<float>::infinity();
      for (int j = 0; j < nk; ++j) {
        if (!a.vis.visible(a.k_pos[j], qp)) s[j] = -std::numeric_limits<float>::infinity();
        mx = std::max(mx, s[j]);
      }
      LSERVE_ASSERT(mx > -std::numeric_limits<float>::infinity());  // the query sees itself
      double sum = 0;
      for (int j = 0; j < nk; ++j) {
        s[j] = std::exp(s[j] - mx);
        sum += s[j];
      }
      const auto inv = static_cast<float>(1.0 / sum);
      for (int j = 0; j < nk; ++j) s[j] *= inv;
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, d, nk, 1.0f, scores.data(), nk, a.v,
                d, 0.0f, obuf.data(), d);
    for (int r = 0; r < nr; ++r) {
      std::memcpy(a.out + (r0 + r) * a.out_stride, &obuf[static_cast<size_t>(r) * d],
                  d * sizeof(float));
    }
  }
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
      scores[j] = a.vis.visible(a.k_pos[j], qp) ? vec::dot(q, a.k + static_cast<int64_t>(j) * d, d) * a.scale
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
