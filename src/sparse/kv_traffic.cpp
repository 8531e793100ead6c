#include "sparse/kv_traffic.h"

#include <algorithm>

namespace lserve {

KvTraffic decode_kv_traffic(const SeqStep& seq, const HeadMap& heads, int n_heads,
                            const SparseAttentionConfig& sp, const KvRowBytes& row) {
  KvTraffic t;
  const double ctx = seq.end_pos();
  const double token_bytes = 2.0 * static_cast<double>(row.kv);  // K and V of one head
  const int P = sp.page_size, L = sp.logical_page_size;
  const auto n_blocks = static_cast<double>((seq.end_pos() + P - 1) / P);
  const int n_layers = static_cast<int>(heads.cls.size());
  for (int l = 0; l < n_layers; ++l) {
    const int n_kv = static_cast<int>(heads.cls[l].size());
    const int group = n_heads / n_kv;
    for (int h = 0; h < n_kv; ++h) {
      // A layer with the model's own window reads only that, even in dense mode.
      const int32_t model_window = heads.model_window(l);
      t.dense_bytes += (model_window > 0 ? std::min<double>(model_window, ctx) : ctx) * token_bytes;
      if (heads.cls[l][h] == HeadClass::kStreaming) {
        const double sink = model_window > 0 ? 0 : std::min<double>(sp.sink_tokens, ctx);
        const double local =
            std::min<double>(model_window > 0 ? model_window : seq.stream_window, ctx - sink);
        t.sparse_bytes += (sink + local) * token_bytes;
        continue;
      }
      if (!seq.uses_selection(l, sp.selector_skip_layers)) {
        t.sparse_bytes += ctx * token_bytes;
        continue;
      }
      // Selected pages (the current one included); query-head granularity reads per query head.
      const double pages = std::min<double>(seq.token_budget / P, n_blocks);
      const int readers = sp.granularity == SelectorGranularity::kQueryHead ? group : 1;
      t.sparse_bytes += readers * std::min(ctx, pages * P) * token_bytes;
      if (seq.refresh_selection) {
        // kmin and kmax per logical page; with one-token pages the keys alone.
        const double stats = L == 1 ? ctx * token_bytes / 2
                                    : static_cast<double>((seq.end_pos() + L - 1) / L) * 2.0 *
                                          static_cast<double>(row.stats);
        t.selector_bytes += stats;
        t.sparse_bytes += stats;
      }
    }
  }
  return t;
}

}  // namespace lserve
