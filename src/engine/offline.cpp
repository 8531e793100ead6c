#include "engine/offline.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "kv/kv_cache.h"

namespace lserve {

std::vector<float> sequence_logits(Model& model, Backend& backend,
                                   const std::vector<int32_t>& tokens, const OfflineRunOptions& o) {
  const ModelConfig& c = model.config();
  const int n = static_cast<int>(tokens.size());
  LSERVE_CHECK(n > 0, "no tokens to run");
  LSERVE_CHECK(o.chunk > 0 && o.page_size > 0, "chunk and page size must be positive");
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_heads = c.n_heads;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.sparse.dense = true;
  kc.sparse.page_size = o.page_size;
  kc.sparse.logical_page_size = o.page_size;
  kc.sparse.token_budget = 2 * o.page_size;
  kc.num_pages = (n + o.page_size - 1) / o.page_size;
  kc.dtype = o.kv_dtype;
  // Dense, but a model's sliding-window layers stay windowed (streaming heads of their window):
  // their pool gets a page for every block too, so only the window's mask decides what they see.
  HeadMap heads = HeadMap::all_retrieval(c.n_layers, c.n_kv_heads);
  heads.set_model_windows(c.layer_windows);
  const bool windowed = heads.max_model_window() > 0;
  if (windowed) kc.num_stream_pages = kc.num_pages;
  KvCache cache(backend, kc, std::move(heads));
  std::vector<int32_t> pages(kc.num_pages);
  std::iota(pages.begin(), pages.end(), 0);
  if (o.scramble_pages) {
    // A fixed permutation (reversed pairs of halves) so page k is not slot k.
    std::reverse(pages.begin(), pages.end());
    for (size_t i = 0; i + 1 < pages.size(); i += 2) std::swap(pages[i], pages[i + 1]);
  }
  std::vector<float> out;
  out.reserve(static_cast<size_t>(o.all_logits ? n - std::min(o.logits_from, n - 1) : 1) *
              c.vocab_size);
  const int64_t chunk_rows = std::min(o.chunk, n);
  Workspace ws(backend, model.workspace_bytes(chunk_rows, chunk_rows, backend.compute_dtype()));
  for (int start = 0; start < n; start += o.chunk) {
    const int len = std::min(o.chunk, n - start);
    StepPlan p;
    SeqStep s;
    s.q_len = len;
    s.start_pos = start;
    const auto wants = [&](int pos) {
      return (o.all_logits && pos >= o.logits_from) || pos == n - 1;
    };
    s.want_logits = wants(start + len - 1);
    p.seqs.push_back(s);
    for (int i = 0; i < len; ++i) {
      p.token_ids.push_back(tokens[start + i]);
      p.positions.push_back(start + i);
      if (wants(start + i)) p.logits_rows.push_back(i);
    }
    const int np = (start + len + o.page_size - 1) / o.page_size;
    p.page_indptr = {0, np};
    p.page_indices.assign(pages.begin(), pages.begin() + np);
    if (windowed) {
      p.stream_indptr = {0, np};
      p.stream_indices = p.page_indices;
    } else {
      p.stream_indptr = {0, 0};
    }
    backend.begin_step(p, cache);
    Tensor logits = model.forward(p, backend, cache, ws);
    const size_t before = out.size();
    out.resize(before + static_cast<size_t>(logits.numel()));
    if (logits.numel() > 0) backend.to_host(logits, out.data() + before);
  }
  return out;
}

}  // namespace lserve
