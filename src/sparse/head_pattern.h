// Which KV heads are retrieval heads: DuoAttention's full_attention_heads.tsv (one row per layer,
// one gate value per KV head) thresholded at a static-sparsity quantile.
#pragma once

#include <string>
#include <vector>

namespace lserve {

struct HeadPattern {
  std::vector<std::vector<double>> gates;  // [layer][kv_head]

  // Parses TSV text; rows are layers, tab/space-separated values are KV heads. `source` names the
  // file in errors. Shape must be n_layers x n_kv_heads (both named in the error otherwise).
  static HeadPattern parse(const std::string& text, const std::string& source, int n_layers,
                           int n_kv_heads);
  static HeadPattern load(const std::string& path, int n_layers, int n_kv_heads);
  std::string to_tsv() const;

  // retrieval[l][h]: the round(s * N) lowest-gate heads are streaming; equal gates are taken in
  // (layer, head) order, so the result is deterministic. s = 0: all retrieval.
  std::vector<std::vector<bool>> retrieval_flags(double static_sparsity) const;
};

}  // namespace lserve
