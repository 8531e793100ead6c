#include "backend/attention_plan.h"

#include <algorithm>
#include <climits>

#include "core/error.h"
#include "sparse/prefill_blocks.h"

namespace lserve {
namespace {

using cuda::AttnWork;
using Ranges = cuda::KeyRanges;

}  // namespace

cuda::SeqInfo seq_info(const StepPlan& plan, size_t s) {
  const SeqStep& q = plan.seqs[s];
  cuda::SeqInfo d{};
  d.q_offset = q.q_offset;
  d.q_len = q.q_len;
  d.start_pos = q.start_pos;
  d.stream_window = q.stream_window;
  d.stream_sink_blocks = q.stream_sink_blocks;
  d.stream_window_first = q.stream_window_first;
  d.token_budget = q.token_budget;
  d.sel_slot = q.sel_slot;
  d.page_base = plan.page_indptr.empty() ? 0 : plan.page_indptr[s];
  d.stream_base = plan.stream_indptr.empty() ? 0 : plan.stream_indptr[s];
  d.n_stream = plan.stream_indptr.empty() ? 0 : plan.stream_indptr[s + 1] - plan.stream_indptr[s];
  d.flags = (q.decode ? cuda::kSeqDecode : 0) | (q.refresh_selection ? cuda::kSeqRefresh : 0);
  return d;
}

cuda::DecodeGrid decode_grid(int rows, const SparseAttentionConfig& sp,
                             const AttentionPlanConfig& cfg) {
  cuda::DecodeGrid g{};
  g.n_kv_heads = cfg.n_kv_heads;
  g.group = cfg.n_heads / cfg.n_kv_heads;
  g.per_query_head = sp.granularity == SelectorGranularity::kQueryHead ? 1 : 0;
  g.units_per_head = g.per_query_head ? g.group : 1;
  g.min_split_keys = cfg.min_split_keys;
  g.key_tile = cfg.decode_key_tile;
  g.layer = cfg.layer;
  g.skip_layers = sp.selector_skip_layers;
  g.page_size = sp.page_size;
  g.budget_cap = sp.token_budget;
  // The host planner's wave cost with every item long: ceil(items * splits / slots) waves, each
  // 1 / splits of an item plus a CTA's start-up (costed as 2% of an item).
  const int64_t items = static_cast<int64_t>(rows) * cfg.n_kv_heads;
  const int64_t slots = std::max<int64_t>(1, 3 * cfg.num_sms);
  int best = 1;
  double best_cost = 1e30;
  for (int splits = 1; splits <= 64; ++splits) {
    const double cost =
        static_cast<double>((items * splits + slots - 1) / slots) * (1.0 / splits + 0.02);
    if (cost < best_cost - 1e-9) {
      best_cost = cost;
      best = splits;
    }
  }
  g.splits = best;
  return g;
}

std::vector<cuda::AppendGroup> plan_append(const StepPlan& plan, int L) {
  std::vector<cuda::AppendGroup> groups;
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    for (int32_t pos = seq.start_pos; pos < seq.end_pos();) {
      const int32_t end = std::min(seq.end_pos(), (pos / L + 1) * L);
      groups.push_back({static_cast<int32_t>(s), pos, end, 0});
      pos = end;
    }
  }
  return groups;
}

AttentionPlan plan_attention(const StepPlan& plan, const HeadMap& heads,
                             const SparseAttentionConfig& sp, const AttentionPlanConfig& cfg) {
  AttentionPlan out;
  out.prefill_estimate = sp.prefill_estimate;
  const int group = cfg.n_heads / cfg.n_kv_heads;
  const int P = sp.page_size;
  LSERVE_CHECK(group <= cfg.prefill_rows, "group size {} is larger than the attention tile ({})",
               group, cfg.prefill_rows);
  // A layer with the model's own sliding window (Gemma 3): its streaming heads see that window
  // and no sink. The backend hands the kernels a sequence table with this window
  // (CudaBackend::Impl::window_seqs) and sink 0, so the ranges here use it too.
  const int32_t model_window = heads.model_window(cfg.layer);
  struct Pending {
    AttnWork w;
    Ranges r;
  };
  std::vector<Pending> decode_items;
  // Query-head selections differ within a group: one item (unit) per query head.
  auto units_of = [&](const SeqStep& seq, int layer_head) {
    const bool streaming = heads.cls[cfg.layer][layer_head] == HeadClass::kStreaming;
    const bool per_head = !streaming && seq.uses_selection(cfg.layer, sp.selector_skip_layers) &&
                          sp.granularity == SelectorGranularity::kQueryHead;
    return per_head ? std::pair{group, 1} : std::pair{1, group};  // units, rows per query
  };
  // Prefill tiles take a whole history each, one CTA per tile. When a step's tiles would leave
  // most multiprocessors idle (a question after a cached long document: a few dozen new tokens
  // over 128K keys), sequences that fit one prefill tile run as 16-row decode tiles instead,
  // which split over keys across the GPU.
  int64_t prefill_tiles = 0;
  for (const SeqStep& seq : plan.seqs) {
    for (int h = 0; h < cfg.n_kv_heads; ++h) {
      const auto [units, rg] = units_of(seq, h);
      if (seq.q_len * rg > cfg.decode_rows) {
        prefill_tiles += units * ((seq.q_len * rg + cfg.prefill_rows - 1) / cfg.prefill_rows);
      }
    }
  }
  const bool split_short = prefill_tiles < cfg.num_sms;
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    cuda::SeqInfo info = seq_info(plan, s);
    if (model_window > 0) info.stream_window = model_window;
    for (int h = 0; h < cfg.n_kv_heads; ++h) {
      const bool streaming = heads.cls[cfg.layer][h] == HeadClass::kStreaming;
      const bool selected = !streaming && seq.uses_selection(cfg.layer, sp.selector_skip_layers);
      const int32_t kind =
          streaming ? cuda::kStreamPages : (selected ? cuda::kSelectedPages : cuda::kAllPages);
      const auto [units, rg] = units_of(seq, h);
      if (kind == cuda::kAllPages && seq.uses_prefill_blocks()) {
        // Block-sparse prefill: per query block of the chunk, one estimate and tiles that stay
        // inside the block (they share its kept list), over the keys of its kept blocks.
        static_assert(kPrefillBlock == cuda::kKeptBlockKeys);
        const int per_tile = cfg.prefill_rows / rg;
        for (int32_t qb = seq.start_pos / kPrefillBlock; qb * kPrefillBlock < seq.end_pos(); ++qb) {
          LSERVE_CHECK(qb < cuda::kPrefillKeepMaxBlocks,
                       "--prefill-sparsity on the cuda backend covers {} positions, not {}",
                       cuda::kPrefillKeepMaxBlocks * kPrefillBlock, seq.end_pos());
          cuda::PrefillMassItem m{};
          m.q_offset = info.q_offset;
          m.start_pos = seq.start_pos;
          m.r0 = std::max(0, qb * kPrefillBlock - seq.start_pos);
          m.r1 = std::min(seq.q_len, (qb + 1) * kPrefillBlock - seq.start_pos);
          m.page_base = info.page_base;
          m.kv_head = h;
          m.threshold = seq.prefill_threshold(seq.start_pos + m.r1 - 1);
          const int32_t list = static_cast<int32_t>(out.prefill_mass.size());
          out.prefill_mass.push_back(m);
          out.prefill_max_blocks = std::max(out.prefill_max_blocks, qb + 1);
          for (int32_t q0 = m.r0; q0 < m.r1; q0 += per_tile) {
            AttnWork w{};
            w.seq = static_cast<int32_t>(s);
            w.kv_head = h;
            w.kind = cuda::kKeptBlocks;
            w.q_first = q0;
            w.q_count = std::min(per_tile, m.r1 - q0);
            w.head0 = h * group;
            w.rg = rg;
            w.partial = -1;
            w.list = list;
            w.k_end[0] = (qb + 1) * kPrefillBlock;  // the kernels clip it to the kept blocks
            out.prefill.push_back(w);
          }
        }
        continue;
      }
      const bool small =
          seq.q_len * rg <= cfg.decode_rows ||
          (split_short && rg <= cfg.decode_rows && seq.q_len * rg <= cfg.prefill_rows);
      const int per_tile = small ? cfg.decode_rows / rg : cfg.prefill_rows / rg;
      for (int u = 0; u < units; ++u) {
        for (int32_t q0 = 0; q0 < seq.q_len; q0 += per_tile) {
          AttnWork w{};
          w.seq = static_cast<int32_t>(s);
          w.kv_head = h;
          w.kind = kind;
          w.q_first = q0;
          w.q_count = std::min(per_tile, seq.q_len - q0);
          w.head0 = h * group + u;
          w.rg = rg;
          w.partial = -1;
          const Ranges r = cuda::key_ranges(info, kind, seq.start_pos + q0,
                                            seq.start_pos + q0 + w.q_count - 1, P, sp.token_budget);
          for (int i = 0; i < 2; ++i) {
            w.k_begin[i] = r.begin[i];
            w.k_end[i] = r.end[i];
          }
          if (small) {
            decode_items.push_back({w, r});
          } else {
            out.prefill.push_back(w);
          }
        }
      }
    }
  }
  // Heaviest tiles first so the long ones do not start last.
  auto keys_of = [](const AttnWork& w) {
    return std::max(0, w.k_end[0] - w.k_begin[0]) + std::max(0, w.k_end[1] - w.k_begin[1]);
  };
  std::stable_sort(out.prefill.begin(), out.prefill.end(),
                   [&](const AttnWork& a, const AttnWork& b) { return keys_of(a) > keys_of(b); });

  // Split long decode items over keys into pieces of at most `chunk` keys. The decode kernel
  // runs about 3 CTAs per multiprocessor (its shared memory and registers), so a launch takes
  // ceil(pieces / slots) waves, each as long as a CTA's fixed start-up (dependent page-table
  // and selection reads, costed as min_split_keys keys) plus `chunk` keys: pick the cheapest
  // chunk, never below min_split_keys, and on ties the larger one (fewer partial results).
  // E.g. 256 equal items on 396 slots: 3 pieces each (2 waves of a third) beat 1 piece (1 wave
  // with a third of the slots idle).
  int64_t longest = 0;
  for (const auto& d : decode_items) longest = std::max<int64_t>(longest, d.r.keys());
  const int64_t slots = std::max<int64_t>(1, 3 * cfg.num_sms);
  auto pieces = [&](int64_t c) {
    int64_t n = 0;
    for (const auto& d : decode_items) n += (d.r.keys() + c - 1) / c;
    return n;
  };
  const int64_t kt = cfg.decode_key_tile;
  auto whole_tiles = [kt](int64_t keys) { return (keys + kt - 1) / kt * kt; };
  int64_t chunk = std::max<int64_t>(kt, whole_tiles(longest));
  const int64_t startup = cfg.min_split_keys;
  int64_t best_cost = (pieces(chunk) + slots - 1) / slots * (chunk + startup);
  for (int64_t split = 2; split <= 256; ++split) {
    const int64_t c = whole_tiles((longest + split - 1) / split);
    if (c < cfg.min_split_keys) break;
    const int64_t cost = (pieces(c) + slots - 1) / slots * (c + startup);
    if (cost < best_cost) {
      best_cost = cost;
      chunk = c;
    }
  }
  for (const auto& d : decode_items) {
    if (d.r.keys() <= chunk) {
      out.decode.push_back(d.w);
      continue;
    }
    // Equal pieces (whole key tiles) rather than full chunks and a short remainder.
    const int64_t splits = (d.r.keys() + chunk - 1) / chunk;
    const int64_t piece = whole_tiles((d.r.keys() + splits - 1) / splits);
    cuda::MergeItem m{};
    m.seq = d.w.seq;
    m.q_first = d.w.q_first;
    m.q_count = d.w.q_count;
    m.head0 = d.w.head0;
    m.rg = d.w.rg;
    m.first = out.n_partials;
    for (int i = 0; i < 2; ++i) {
      for (int32_t b = d.r.begin[i]; b < d.r.end[i]; b += static_cast<int32_t>(piece)) {
        AttnWork w = d.w;
        w.k_begin[0] = b;
        w.k_end[0] = static_cast<int32_t>(std::min<int64_t>(d.r.end[i], b + piece));
        w.k_begin[1] = w.k_end[1] = 0;
        w.partial = out.n_partials++;
        out.decode.push_back(w);
      }
    }
    m.count = out.n_partials - m.first;
    out.merges.push_back(m);
  }
  return out;
}

}  // namespace lserve
