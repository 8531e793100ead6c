// How many KV bytes an attention implementation must read for one decode step of one sequence,
// in the configured mode and densely, computed from the plan (not measured): the numbers behind
// `lserve generate --stats` and the /metrics sparse share.
#pragma once

#include <cstdint>

#include "kv/kv_dtype.h"
#include "kv/kv_layout.h"
#include "kv/step_plan.h"
#include "sparse/sparse_config.h"

namespace lserve {

struct KvTraffic {
  double dense_bytes = 0;     // every KV head reads every token
  double sparse_bytes = 0;    // what this mode reads (attention + selector)
  double selector_bytes = 0;  // the part spent reading key statistics for page selection

  KvTraffic& operator+=(const KvTraffic& o) {
    dense_bytes += o.dense_bytes;
    sparse_bytes += o.sparse_bytes;
    selector_bytes += o.selector_bytes;
    return *this;
  }
};

KvTraffic decode_kv_traffic(const SeqStep& seq, const HeadMap& heads, int n_heads,
                            const SparseAttentionConfig& sparse, const KvRowBytes& row);

}  // namespace lserve
