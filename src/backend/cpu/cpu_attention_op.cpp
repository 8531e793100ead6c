// The CPU attention op: for each (sequence, head) collect exactly the keys the sparse-attention
// rules let it see (docs/sparse-attention.md "Visibility"), in position order, then run dense
// attention over them with the position-based mask. Simple by design: this is the reference the
// GPU kernels match.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "kv/kv_cache.h"
#include "sparse/prefill_blocks.h"

namespace lserve {
namespace {

// Sequences with at most this many new tokens attend on one thread each (decode); longer ones use
// GEMM tiles.
constexpr int kDirectQueryRows = 4;
// Chunks sparse prefill applies to all take the pooled path below.
static_assert(kSparsePrefillMinQueries > kDirectQueryRows);

struct KeySet {
  std::vector<float> k, v;
  std::vector<int32_t> pos;
  Visibility vis;
  void clear() {
    k.clear();
    v.clear();
    pos.clear();
  }
};

struct HeadTask {
  size_t seq;
  int kv_head;
  int q_head;  // -1: every query head of the group shares the key set
};

// Blocks of positions [0, end) a retrieval head reads: all of them, or its selection plus the
// current block when decoding sparsely.
std::vector<int32_t> retrieval_blocks(const StepPlan& plan, size_t s, int layer, int sel_head,
                                      KvCache& cache) {
  const SeqStep& seq = plan.seqs[s];
  const int P = cache.page_size();
  const int32_t n_blocks = (seq.end_pos() + P - 1) / P;
  std::vector<int32_t> blocks;
  if (!seq.uses_selection(layer, cache.sparse().selector_skip_layers)) {
    blocks.resize(n_blocks);
    for (int32_t b = 0; b < n_blocks; ++b) blocks[b] = b;
    return blocks;
  }
  LSERVE_ASSERT(seq.sel_slot >= 0);
  const int64_t row = cache.sel_row(seq.sel_slot, layer, sel_head);
  const int32_t count = cache.sel_count().as<int32_t>()[row];
  const int32_t* sel = cache.sel_blocks().as<int32_t>() + row * cache.max_sel_pages();
  blocks.assign(sel, sel + count);
  // The current block is always read, also between selector refreshes.
  blocks.push_back(n_blocks - 1);
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  return blocks;
}

void collect(const StepPlan& plan, size_t s, int layer, const HeadTask& t, KvCache& cache,
             KeySet& out) {
  out.clear();
  const SeqStep& seq = plan.seqs[s];
  const int P = cache.page_size(), d = cache.config().head_dim;
  const HeadClass cls = cache.heads().cls[layer][t.kv_head];
  const int hs = cache.heads().slot[layer][t.kv_head];
  const int n_heads = cache.layout(cls).heads_per_layer[layer];
  const float* kc = cache.k(cls, layer).as<float>();
  const float* vc = cache.v(cls, layer).as<float>();
  auto add_block = [&](int32_t block, int32_t page) {
    const int32_t first = block * P;
    const int32_t n = std::min(P, seq.end_pos() - first);
    const int64_t row = (static_cast<int64_t>(page) * n_heads + hs) * P;
    out.k.insert(out.k.end(), kc + row * d, kc + (row + n) * d);
    out.v.insert(out.v.end(), vc + row * d, vc + (row + n) * d);
    for (int32_t i = 0; i < n; ++i) out.pos.push_back(first + i);
  };
  if (cls == HeadClass::kStreaming) {
    // A layer's own sliding window (the model's) or the sparse config's sink + window.
    const int32_t model_window = cache.heads().model_window(layer);
    out.vis = model_window > 0 ? Visibility{0, model_window}
                               : Visibility{cache.sparse().sink_tokens, seq.stream_window};
    const int32_t n_blocks = (seq.end_pos() + P - 1) / P;
    for (int32_t b = 0; b < n_blocks; ++b) {
      const int32_t page = plan.stream_page(s, b);
      if (page >= 0) add_block(b, page);
    }
    return;
  }
  out.vis = Visibility{};
  const int sel_head = t.q_head >= 0 ? t.q_head : t.kv_head;
  for (int32_t b : retrieval_blocks(plan, s, layer, sel_head, cache))
    add_block(b, plan.pages_of(s)[b]);
}

// A retrieval head's prefill chunk under --prefill-sparsity: per block of its queries, the key
// blocks the estimate keeps (sparse/prefill_blocks.h), then causal attention over just those
// keys for each query head of the group. `keys` holds every position 0 .. end - 1; `args` gives
// a query head's arguments over a key set; `estimate` is the sparse settings'. Blocks spread over
// the pool, one thread each; the blocks kept and the causal ones are added to `kept` and `causal`.
template <typename ArgsFor>
void attend_prefill_blocks(const SeqStep& seq, PrefillEstimate estimate,
                           const std::vector<int>& heads, const KeySet& keys, const ArgsFor& args,
                           ThreadPool& pool, std::atomic<int64_t>& kept_total,
                           std::atomic<int64_t>& causal_total) {
  const int32_t n_keys = static_cast<int32_t>(keys.pos.size());
  LSERVE_ASSERT(n_keys == seq.end_pos() && keys.pos.front() == 0);
  const int32_t first_block = seq.start_pos / kPrefillBlock;
  const int32_t n_blocks = (seq.end_pos() - 1) / kPrefillBlock - first_block + 1;
  pool.parallel_for(n_blocks, [&](int64_t i) {
    const int32_t qb = first_block + static_cast<int32_t>(i);
    const int32_t r0 = std::max(0, qb * kPrefillBlock - seq.start_pos);
    const int32_t r1 = std::min(seq.q_len, (qb + 1) * kPrefillBlock - seq.start_pos);
    const int32_t last = seq.start_pos + r1 - 1;  // the block's last query sees keys up to it
    const AttendArgs whole = args(heads.front(), keys);
    const int d = whole.head_dim;
    PrefillBlockQuery in;
    in.q = whole.q + r0 * whole.q_stride;
    in.q_stride = whole.q_stride;
    in.q_pos = whole.q_pos + r0;
    in.nq = r1 - r0;
    in.group = static_cast<int>(heads.size());
    in.head_dim = d;
    in.k = keys.k.data();
    in.nk = last + 1;
    in.scale = whole.scale;
    KeySet kept;
    kept.vis = keys.vis;
    const std::vector<int32_t> blocks =
        keep_prefill_blocks(prefill_block_mass(in, estimate), seq.prefill_threshold(last));
    kept_total += static_cast<int64_t>(blocks.size());
    causal_total += qb + 1;
    for (int32_t b : blocks) {
      const int32_t begin = b * kPrefillBlock, end = std::min(last + 1, begin + kPrefillBlock);
      kept.k.insert(kept.k.end(), keys.k.begin() + int64_t{begin} * d,
                    keys.k.begin() + int64_t{end} * d);
      kept.v.insert(kept.v.end(), keys.v.begin() + int64_t{begin} * d,
                    keys.v.begin() + int64_t{end} * d);
      for (int32_t j = begin; j < end; ++j) kept.pos.push_back(j);
    }
    for (int qh : heads) {
      AttendArgs a = args(qh, kept);
      a.q += r0 * a.q_stride;
      a.q_pos += r0;
      a.nq = r1 - r0;
      a.out += r0 * a.out_stride;
      attend_serial(a);
    }
  });
}

}  // namespace

void CpuBackend::attention(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
                           Tensor& out) {
  const int d = cache.config().head_dim;
  const int hq = static_cast<int>(q.cols / d);
  const int hkv = cache.config().n_kv_heads;
  const int group = hq / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const bool per_query_head = cache.sparse().granularity == SelectorGranularity::kQueryHead;

  // One task per (sequence, KV head), or per query head when query-head selections differ.
  std::vector<HeadTask> small, large;
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    for (int h = 0; h < hkv; ++h) {
      const bool split = per_query_head && cache.heads().cls[layer][h] == HeadClass::kRetrieval &&
                         seq.uses_selection(layer, cache.sparse().selector_skip_layers);
      auto& list = seq.q_len <= kDirectQueryRows ? small : large;
      if (split) {
        for (int g = 0; g < group; ++g) list.push_back({s, h, h * group + g});
      } else {
        list.push_back({s, h, -1});
      }
    }
  }
  auto args_for = [&](const HeadTask& t, int qh, const KeySet& keys) {
    const SeqStep& seq = plan.seqs[t.seq];
    AttendArgs a;
    a.q = q.as<float>() + static_cast<int64_t>(seq.q_offset) * q.cols + qh * d;
    a.q_stride = q.cols;
    a.q_pos = plan.positions.data() + seq.q_offset;
    a.nq = seq.q_len;
    a.k = keys.k.data();
    a.v = keys.v.data();
    a.k_pos = keys.pos.data();
    a.nk = static_cast<int>(keys.pos.size());
    a.head_dim = d;
    a.scale = scale;
    a.vis = keys.vis;
    a.out = out.as<float>() + static_cast<int64_t>(seq.q_offset) * out.cols + qh * d;
    a.out_stride = out.cols;
    return a;
  };
  auto heads_of = [&](const HeadTask& t) {
    return t.q_head >= 0 ? std::vector<int>{t.q_head} : [&] {
      std::vector<int> v(group);
      for (int g = 0; g < group; ++g) v[g] = t.kv_head * group + g;
      return v;
    }();
  };

  pool_.parallel_for(static_cast<int64_t>(small.size()), [&](int64_t i) {
    KeySet keys;
    collect(plan, small[i].seq, layer, small[i], cache, keys);
    for (int qh : heads_of(small[i])) attend_direct(args_for(small[i], qh, keys));
  });
  KeySet keys;
  for (const HeadTask& t : large) {
    collect(plan, t.seq, layer, t, cache, keys);
    const SeqStep& seq = plan.seqs[t.seq];
    if (seq.uses_prefill_blocks() && cache.heads().cls[layer][t.kv_head] == HeadClass::kRetrieval) {
      attend_prefill_blocks(
          seq, cache.sparse().prefill_estimate, heads_of(t), keys,
          [&](int qh, const KeySet& ks) { return args_for(t, qh, ks); }, pool_, blocks_kept_,
          blocks_causal_);
      continue;
    }
    for (int qh : heads_of(t)) attend(args_for(t, qh, keys), pool_);
  }
  if (observer_) observer_(layer, q, plan, cache, out);
}

}  // namespace lserve
