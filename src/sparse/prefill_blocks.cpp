#include "sparse/prefill_blocks.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/error.h"

namespace lserve {

std::string_view prefill_estimate_name(PrefillEstimate e) {
  return e == PrefillEstimate::kSampledRows ? "sampled-rows" : "antidiagonal";
}

PrefillEstimate parse_prefill_estimate(const std::string& name) {
  for (PrefillEstimate e : {PrefillEstimate::kAntidiagonal, PrefillEstimate::kSampledRows}) {
    if (name == prefill_estimate_name(e)) return e;
  }
  throw Error(fmt::format("unknown prefill estimate '{}' (antidiagonal, sampled-rows)", name));
}

std::vector<double> prefill_block_mass(const PrefillBlockQuery& in, PrefillEstimate estimate) {
  // Both estimates are one computation: rows of S queries against columns of S keys (S = 1 for
  // sampled rows, which also leave out the queries between samples).
  const bool sampled = estimate == PrefillEstimate::kSampledRows;
  const int S = sampled ? 1 : kAntidiagStride;
  constexpr int B = kPrefillBlock;
  const int d = in.head_dim, width = S * d;
  LSERVE_ASSERT(in.nq > 0 && in.nk > 0 && d > 0 && in.group > 0);
  const int32_t qb = in.q_pos[0] / B;
  LSERVE_ASSERT(in.q_pos[in.nq - 1] / B == qb && in.q_pos[in.nq - 1] < in.nk);
  auto used = [&](int r) {
    return !sampled || r == in.nq - 1 || in.q_pos[r] % kSampledRowStride == kSampledRowStride - 1;
  };

  // The compressed rows present (ascending, as the positions are) and, per query head, their
  // vectors: row a holds the query at a S + S - 1 - i in slot i (the antidiagonal's order).
  std::vector<int32_t> rows_a;
  for (int r = 0; r < in.nq; ++r) {
    if (!used(r)) continue;
    const int32_t a = in.q_pos[r] / S;
    if (rows_a.empty() || rows_a.back() != a) rows_a.push_back(a);
  }
  const int n_rows = static_cast<int>(rows_a.size());
  const int m = in.group * n_rows;
  std::vector<float> qc(static_cast<size_t>(m) * width, 0.0f);
  for (int r = 0, ai = 0; r < in.nq; ++r) {
    if (!used(r)) continue;
    while (rows_a[ai] != in.q_pos[r] / S) ++ai;
    const int slot = S - 1 - (in.q_pos[r] - rows_a[ai] * S);
    for (int g = 0; g < in.group; ++g) {
      std::memcpy(&qc[(static_cast<size_t>(g) * n_rows + ai) * width + slot * d],
                  in.q + r * in.q_stride + g * d, d * sizeof(float));
    }
  }

  // Columns 0 .. last row's a; a column whose keys run past nk is completed with zeros. The keys
  // of a full column are contiguous, so the product reads them in place.
  const int n_cols = rows_a.back() + 1;
  const int full_cols = std::min(n_cols, in.nk / S);
  const float alpha = in.scale / S;
  std::vector<float> sc(static_cast<size_t>(m) * n_cols);
  if (full_cols > 0) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, full_cols, width, alpha, qc.data(),
                width, in.k, width, 0.0f, sc.data(), n_cols);
  }
  for (int b = full_cols; b < n_cols; ++b) {
    const int present = std::min(S, in.nk - b * S);
    for (int i = 0; i < m; ++i) {
      float dot = 0.0f;
      for (int e = 0; e < present * d; ++e) {
        dot += qc[static_cast<size_t>(i) * width + e] * in.k[static_cast<int64_t>(b) * width + e];
      }
      sc[static_cast<size_t>(i) * n_cols + b] = dot * alpha;
    }
  }

  // Each compressed row's softmax over its causal columns, summed per key block.
  std::vector<double> mass(qb + 1, 0.0), e(n_cols);
  for (int i = 0; i < m; ++i) {
    const int32_t a = rows_a[i % n_rows];
    const float* s = &sc[static_cast<size_t>(i) * n_cols];
    const float mx = *std::max_element(s, s + a + 1);
    double sum = 0;
    for (int b = 0; b <= a; ++b) sum += e[b] = std::exp(static_cast<double>(s[b] - mx));
    for (int b = 0; b <= a; ++b) mass[b * S / B] += e[b] / sum;
  }
  for (double& x : mass) x /= m;
  return mass;
}

std::vector<int32_t> keep_prefill_blocks(const std::vector<double>& mass, double threshold) {
  const int n = static_cast<int>(mass.size());
  LSERVE_ASSERT(n > 0);
  std::vector<int32_t> kept;
  if (threshold >= 1.0) {
    kept.resize(n);
    std::iota(kept.begin(), kept.end(), 0);
    return kept;
  }
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return mass[x] > mass[y]; });
  std::vector<bool> keep(n, false);
  keep[0] = keep[n - 1] = true;
  double sum = 0;
  for (int32_t b : order) {
    if (sum >= threshold) break;
    keep[b] = true;
    sum += mass[b];
  }
  for (int32_t b = 0; b < n; ++b) {
    if (keep[b]) kept.push_back(b);
  }
  return kept;
}

}  // namespace lserve
