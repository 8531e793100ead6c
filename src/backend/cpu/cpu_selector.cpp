// The CPU page selector: Quest bounds per logical page from the key statistics, max over the
// group (kv-head granularity), max over a physical page's logical pages, then the best pages under
// the token budget (sparse/page_selection.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "kv/kv_cache.h"
#include "sparse/page_selection.h"

namespace lserve {

namespace {

double cosine(const float* a, const float* b, int d) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < d; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

}  // namespace

void CpuBackend::select_pages(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache) {
  const SparseAttentionConfig& sp = cache.sparse();
  const int d = cache.config().head_dim;
  const int hkv = cache.config().n_kv_heads;
  const int group = static_cast<int>(q.cols / d) / hkv;
  const int P = cache.page_size(), L = cache.logical_page_size(),
            lpp = cache.logical_pages_per_page();
  const HeadMap& heads = cache.heads();
  const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
  const bool per_query_head = sp.granularity == SelectorGranularity::kQueryHead;
  const bool drift = sp.selector_drift > 0;

  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    if (!seq.uses_selection(layer, sp.selector_skip_layers)) continue;
    if (!seq.refresh_selection && !drift) continue;
    LSERVE_ASSERT(seq.q_len == 1 && seq.sel_slot >= 0);
    const int32_t n_tokens = seq.end_pos();
    const int32_t n_blocks = (n_tokens + P - 1) / P;
    const int32_t n_logical = (n_tokens + L - 1) / L;  // logical pages holding at least one token
    const int32_t others = std::min(seq.token_budget, sp.token_budget) / P - 1;
    const float* qrow = q.as<float>() + static_cast<int64_t>(seq.q_offset) * q.cols;
    for (int h = 0; h < hkv; ++h) {
      if (heads.cls[layer][h] != HeadClass::kRetrieval) continue;
      const int hs = heads.slot[layer][h];
      const int units = per_query_head ? group : 1;
      for (int u = 0; u < units; ++u) {
        const int g0 = per_query_head ? u : 0, g1 = per_query_head ? u + 1 : group;
        float* stored = drift ? cache.sel_query().as<float>() : nullptr;
        auto stored_of = [&](int g) {
          return stored + cache.sel_query_row(seq.sel_slot, layer, h * group + g) * d;
        };
        bool refresh = seq.refresh_selection;
        for (int g = g0; g < g1 && !refresh; ++g) {
          refresh = cosine(qrow + (h * group + g) * d, stored_of(g), d) < sp.selector_drift;
        }
        if (!refresh) continue;
        if (drift) {
          for (int g = g0; g < g1; ++g) std::copy_n(qrow + (h * group + g) * d, d, stored_of(g));
        }
        std::vector<float> block_score(n_blocks, -std::numeric_limits<float>::infinity());
        for (int32_t lp = 0; lp < n_logical; ++lp) {
          const int32_t block = lp / lpp;
          const int64_t page = plan.pages_of(s)[block];
          const int64_t srow = ((page * nr + hs) * lpp + lp % lpp) * d;
          float score = -std::numeric_limits<float>::infinity();
          for (int g = g0; g < g1; ++g) {
            const float* qv = qrow + (h * group + g) * d;
            score = std::max(score, quest_bound(qv, cache.kmin(layer).as<float>() + srow,
                                                cache.kmax(layer).as<float>() + srow, d));
          }
          block_score[block] = std::max(block_score[block], score);
        }
        const auto chosen = select_blocks(block_score, others);
        const int sel_head = per_query_head ? h * group + u : h;
        const int64_t row = cache.sel_row(seq.sel_slot, layer, sel_head);
        cache.sel_count().as<int32_t>()[row] = static_cast<int32_t>(chosen.size());
        std::copy(chosen.begin(), chosen.end(),
                  cache.sel_blocks().as<int32_t>() + row * cache.max_sel_pages());
      }
    }
  }
}

}  // namespace lserve
