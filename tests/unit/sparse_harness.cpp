#include "sparse_harness.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <map>
#include <numeric>

#include "sparse/prefill_blocks.h"

namespace lserve::test {
namespace {

Tensor upload(Backend& b, const std::vector<float>& v, int64_t rows, int64_t cols) {
  return b.upload(v.data(), rows, cols);
}

std::vector<float> download(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.to_host(t, v.data());
  return v;
}

}  // namespace

SparseHarness::SparseHarness(Backend& backend, const SparseCase& c, uint64_t seed)
    : backend_(backend), c_(c), rng_(seed) {
  if (c_.retrieval.empty()) {
    std::bernoulli_distribution coin(0.5);
    c_.retrieval.assign(c_.n_layers, std::vector<bool>(c_.n_kv_heads));
    for (auto& layer : c_.retrieval) {
      for (size_t h = 0; h < layer.size(); ++h) layer[h] = coin(rng_);
    }
  }
  HeadMap heads = HeadMap::from_flags(c_.retrieval);
  heads.set_model_windows(c_.model_windows);
  // The reference reads the classes from `retrieval`: windowed layers' heads are streaming.
  for (int l = 0; l < c_.n_layers; ++l) {
    for (int h = 0; h < c_.n_kv_heads; ++h) {
      c_.retrieval[l][h] = heads.cls[l][h] == HeadClass::kRetrieval;
    }
  }
  KvCacheConfig kc;
  kc.n_layers = c_.n_layers;
  kc.n_heads = c_.n_kv_heads * c_.group;
  kc.n_kv_heads = c_.n_kv_heads;
  kc.head_dim = c_.head_dim;
  kc.num_pages = c_.num_pages;
  kc.num_stream_pages = c_.num_stream_pages;
  kc.num_sel_slots = 2;
  kc.sparse = c_.sparse;
  kc.dtype = c_.kv_dtype;
  cache_ = std::make_unique<KvCache>(backend_, kc, heads);
  // backend_selection() reads the selection tensors whole, rows of other slots and layers too:
  // zeros there rather than never-written memory (which compute-sanitizer initcheck reports).
  for (Tensor* t : {&cache_->sel_blocks(), &cache_->sel_count()}) {
    if (t->empty()) continue;
    const std::vector<int32_t> zeros(static_cast<size_t>(t->numel()), 0);
    backend_.write(*t, zeros.data());
  }
  BlockManagerConfig bc;
  bc.page_size = c_.sparse.page_size;
  bc.num_pages = c_.num_pages;
  bool any_streaming = false;
  for (auto& l : c_.retrieval) {
    for (bool r : l) any_streaming |= !r;
  }
  bc.num_stream_pages = any_streaming ? c_.num_stream_pages : 0;
  bc.sink_tokens = c_.sparse.sink_tokens;
  bc.num_sel_slots = 2;
  SchedulerConfig sc;
  sc.max_num_batched_tokens = c_.chunk;
  if (!c_.model_windows.empty()) {
    // As the engine does: only sparse streaming heads keep a sink, and the streaming pool keeps
    // the longer of the sparse and the model windows.
    bc.sink_tokens = heads.has_sparse_streaming() ? c_.sparse.sink_tokens : 0;
    sc.model_window = heads.max_model_window();
    sc.sparse_streaming = heads.has_sparse_streaming();
  }
  blocks_ = std::make_unique<BlockManager>(bc);
  scheduler_ = std::make_unique<Scheduler>(sc, c_.sparse, *blocks_);
  seq_.id = 1;
  seq_.tokens.assign(c_.prompt_len, 0);
  seq_.prompt_len = c_.prompt_len;
  k_hist_.assign(c_.n_layers, {});
  v_hist_.assign(c_.n_layers, {});
  const int sel_heads = c_.sparse.granularity == SelectorGranularity::kKvHead
                            ? c_.n_kv_heads
                            : c_.n_kv_heads * c_.group;
  ref_sel_.assign(c_.n_layers, std::vector<std::vector<int32_t>>(sel_heads));
  ref_sel_q_.assign(c_.n_layers, std::vector<std::vector<float>>(sel_heads));
  prev_q_.assign(c_.n_layers, {});
}

std::vector<double> SparseHarness::reference_block_scores(int layer, int sel_head, int32_t pos,
                                                          const float* q_row) {
  const int d = c_.head_dim, P = c_.sparse.page_size, L = c_.sparse.logical_page_size;
  const bool per_q = c_.sparse.granularity == SelectorGranularity::kQueryHead;
  const int kv = per_q ? sel_head / c_.group : sel_head;
  const int n_tokens = pos + 1;
  const int n_blocks = (n_tokens + P - 1) / P;
  std::vector<double> block_score(n_blocks, -std::numeric_limits<double>::infinity());
  for (int lp = 0; lp * L < n_tokens; ++lp) {
    // Bounds straight from the keys of this logical page.
    std::vector<double> lo(d, std::numeric_limits<double>::infinity());
    std::vector<double> hi(d, -std::numeric_limits<double>::infinity());
    for (int j = lp * L; j < std::min(n_tokens, (lp + 1) * L); ++j) {
      for (int ch = 0; ch < d; ++ch) {
        const double x = k_hist_[layer][j][kv * d + ch];
        lo[ch] = std::min(lo[ch], x);
        hi[ch] = std::max(hi[ch], x);
      }
    }
    if (backend_.compute_dtype() == DType::BF16 && L > 1) {
      // Stored bounds are bf16: rounding is monotonic, so they are the bounds of the rounded keys
      // exactly when the keys are bf16 and the rounded bounds of the fp8 ones.
      for (int ch = 0; ch < d; ++ch) {
        lo[ch] = bf16_to_f32(f32_to_bf16(static_cast<float>(lo[ch])));
        hi[ch] = bf16_to_f32(f32_to_bf16(static_cast<float>(hi[ch])));
      }
    }
    double best = -std::numeric_limits<double>::infinity();
    for (int g = 0; g < c_.group; ++g) {
      const int qh = kv * c_.group + g;
      if (per_q && qh != sel_head) continue;
      double s = 0;
      for (int ch = 0; ch < d; ++ch) {
        const double qc = q_row[qh * d + ch];
        s += std::max(qc * lo[ch], qc * hi[ch]);
      }
      best = std::max(best, s);
    }
    block_score[lp * L / P] = std::max(block_score[lp * L / P], best);
  }
  return block_score;
}

std::vector<int32_t> SparseHarness::reference_selection(const std::vector<double>& block_score) {
  const int P = c_.sparse.page_size;
  const int n_blocks = static_cast<int>(block_score.size());
  const int others = std::min(c_.sparse.token_budget / P - 1, n_blocks - 1);
  std::vector<int32_t> order(n_blocks - 1);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return block_score[a] > block_score[b]; });
  std::vector<int32_t> chosen(order.begin(), order.begin() + others);
  chosen.push_back(n_blocks - 1);
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<int32_t> SparseHarness::backend_selection(const SeqStep& s, int layer, int sel_head) {
  const int64_t row = cache_->sel_row(s.sel_slot, layer, sel_head);
  const int max_sel = cache_->max_sel_pages();
  const std::vector<float> count = download(backend_, cache_->sel_count());
  const std::vector<float> blocks = download(backend_, cache_->sel_blocks());
  std::vector<int32_t> sel;
  for (int i = 0; i < static_cast<int>(count[row]); ++i) {
    sel.push_back(static_cast<int32_t>(blocks[row * max_sel + i]));
  }
  return sel;
}

std::vector<int32_t> SparseHarness::settle_ties(const std::vector<double>& scores,
                                                const std::vector<int32_t>& reference,
                                                const std::vector<int32_t>& backend) {
  // Both lists hold the current (last) block; the backend's may leave it out (the attention
  // kernels add it), so compare the older blocks only.
  const int32_t current = static_cast<int32_t>(scores.size()) - 1;
  std::set<int32_t> ref(reference.begin(), reference.end()), got(backend.begin(), backend.end());
  ref.erase(current);
  got.erase(current);
  if (ref == got) return reference;
  // The k-th largest reference score: blocks the two choose differently must score within
  // rounding of it (the backend scores in f32 from bf16 bounds, the reference in double), or the
  // backend chose wrongly.
  double cutoff = std::numeric_limits<double>::infinity();
  for (int32_t b : ref) cutoff = std::min(cutoff, scores[b]);
  const double tie = 1e-4 * (1.0 + std::abs(cutoff));
  std::vector<int32_t> differ;
  std::set_symmetric_difference(ref.begin(), ref.end(), got.begin(), got.end(),
                                std::back_inserter(differ));
  EXPECT_EQ(ref.size(), got.size()) << "selected blocks";
  for (int32_t b : differ) {
    EXPECT_TRUE(b >= 0 && b < current) << "selected block " << b << " of " << current;
    if (b < 0 || b >= current) continue;
    EXPECT_LE(std::abs(scores[b] - cutoff), tie)
        << "block " << b << " scores " << scores[b] << ", the selection's cutoff is " << cutoff
        << ": not a tie, the backend selected differently";
  }
  ++selection_ties;
  std::vector<int32_t> out(got.begin(), got.end());
  out.push_back(current);
  return out;
}

std::vector<std::vector<int32_t>> SparseHarness::prefill_kept_blocks(const SeqStep& s, int layer,
                                                                     int kv, int32_t qb,
                                                                     const std::vector<float>& q) {
  const int d = c_.head_dim, hq = c_.n_kv_heads * c_.group;
  const int32_t r0 = std::max(0, qb * kPrefillBlock - s.start_pos);
  const int32_t r1 = std::min(s.q_len, (qb + 1) * kPrefillBlock - s.start_pos);
  const int32_t last = s.start_pos + r1 - 1;
  std::vector<float> k(static_cast<size_t>(last + 1) * d);
  for (int32_t j = 0; j <= last; ++j) {
    std::copy_n(k_hist_[layer][j].begin() + kv * d, d, k.begin() + static_cast<size_t>(j) * d);
  }
  std::vector<int32_t> q_pos(r1 - r0);
  for (int32_t i = r0; i < r1; ++i) q_pos[i - r0] = s.start_pos + i;
  PrefillBlockQuery in;
  in.q = q.data() + (static_cast<size_t>(r0) * hq + kv * c_.group) * d;
  in.q_stride = static_cast<int64_t>(hq) * d;
  in.q_pos = q_pos.data();
  in.nq = r1 - r0;
  in.group = c_.group;
  in.head_dim = d;
  in.k = k.data();
  in.nk = last + 1;
  in.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const std::vector<double> mass = prefill_block_mass(in, c_.sparse.prefill_estimate);
  const double threshold = s.prefill_threshold(last);
  std::vector<std::vector<int32_t>> sets = {keep_prefill_blocks(mass, threshold)};
  ++prefill_block_estimates;
  prefill_blocks_dropped += qb + 1 - static_cast<int>(sets[0].size());
  if (threshold >= 1.0) return sets;
  // A backend estimating in float (the CUDA kernels: shares within ~1e-6 of these) may fall on
  // the other side of a decision that is that close here: the running sum reaching the threshold
  // one block earlier or later, or two shares at the cut swapping places. Such sets are
  // accepted too (check_step takes the one the output matches).
  constexpr double kEps = 1e-5;
  const int n = static_cast<int>(mass.size());
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return mass[x] > mass[y]; });
  std::vector<double> cum(n + 1, 0.0);
  for (int i = 0; i < n; ++i) cum[i + 1] = cum[i] + mass[order[i]];
  int take = 0;
  while (take < n && cum[take] < threshold) ++take;
  auto add = [&](std::vector<int32_t> top) {
    std::set<int32_t> keep(top.begin(), top.end());
    keep.insert(0);
    keep.insert(n - 1);
    std::vector<int32_t> set(keep.begin(), keep.end());
    if (std::find(sets.begin(), sets.end(), set) == sets.end()) sets.push_back(std::move(set));
  };
  if (take > 0 && threshold - cum[take - 1] < kEps) {
    add(std::vector<int32_t>(order.begin(), order.begin() + take - 1));
  }
  if (take < n && cum[take] - threshold < kEps) {
    add(std::vector<int32_t>(order.begin(), order.begin() + take + 1));
  }
  if (take > 0 && take < n && mass[order[take - 1]] - mass[order[take]] < kEps) {
    std::vector<int32_t> top(order.begin(), order.begin() + take);
    top.back() = order[take];
    add(top);
  }
  return sets;
}

void SparseHarness::expect_block_counts(const Backend::PrefillBlockStats& before) {
  const Backend::PrefillBlockStats after = backend_.prefill_block_stats();
  const int64_t dropped = (after.causal - before.causal) - (after.kept - before.kept);
  if (prefill_block_ties == 0) {
    EXPECT_EQ(dropped, prefill_blocks_dropped);
  } else {
    EXPECT_LE(std::abs(dropped - prefill_blocks_dropped), prefill_block_estimates);
  }
}

void SparseHarness::check_step(const StepPlan& plan, int layer, const std::vector<float>& q,
                               const std::vector<float>& out, double tolerance, double& max_diff) {
  const SeqStep& s = plan.seqs[0];
  const int d = c_.head_dim, P = c_.sparse.page_size, hq = c_.n_kv_heads * c_.group;
  const bool per_q = c_.sparse.granularity == SelectorGranularity::kQueryHead;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Dynamic prefill sparsity (retrieval heads, prefill chunks of more than a few tokens, as the
  // CPU op applies it): the kept key blocks per (query block, KV head), estimated once each.
  const bool block_sparse = s.uses_prefill_blocks();
  std::map<std::pair<int32_t, int>, std::vector<std::vector<int32_t>>> kept_blocks;
  for (int i = 0; i < s.q_len; ++i) {
    const int32_t pos = s.start_pos + i;
    const float* q_row = q.data() + static_cast<size_t>(i) * hq * d;
    const bool decoding = pos >= c_.prompt_len;
    const bool sparse_decode = decoding && !c_.sparse.dense && pos + 1 > c_.sparse.token_budget &&
                               layer >= c_.sparse.selector_skip_layers;
    const int32_t model_window = c_.model_windows.empty() ? 0 : c_.model_windows[layer];
    for (int qh = 0; qh < hq; ++qh) {
      const int kv = qh / c_.group;
      // A model window holds in dense mode too.
      const bool retrieval = model_window <= 0 && (c_.retrieval[layer][kv] || c_.sparse.dense);
      // The key sets the output may be attention over: one, or for a block-sparse retrieval head
      // the reference's kept blocks and any it accepts as rounding-close alternatives.
      std::vector<std::vector<int32_t>> key_sets(1);
      std::vector<int32_t>& keys = key_sets[0];
      if (model_window > 0) {
        for (int32_t j = std::max(0, pos - model_window + 1); j <= pos; ++j) keys.push_back(j);
      } else if (!retrieval) {
        const int64_t window = decoding ? c_.sparse.local_tokens : c_.sparse.prefill_local_tokens;
        for (int32_t j = 0; j <= pos; ++j) {
          if (j < c_.sparse.sink_tokens || j > pos - window) keys.push_back(j);
        }
      } else if (block_sparse && retrieval) {
        const int32_t qb = pos / kPrefillBlock;
        auto it = kept_blocks.find({qb, kv});
        if (it == kept_blocks.end()) {
          it = kept_blocks.emplace(std::make_pair(qb, kv), prefill_kept_blocks(s, layer, kv, qb, q))
                   .first;
        }
        key_sets.assign(it->second.size(), {});
        for (size_t c = 0; c < it->second.size(); ++c) {
          for (int32_t b : it->second[c]) {
            for (int32_t j = b * kPrefillBlock; j < std::min(pos + 1, (b + 1) * kPrefillBlock);
                 ++j) {
              key_sets[c].push_back(j);
            }
          }
        }
      } else if (!sparse_decode) {
        for (int32_t j = 0; j <= pos; ++j) keys.push_back(j);
      } else {
        std::set<int32_t> blocks(ref_sel_[layer][per_q ? qh : kv].begin(),
                                 ref_sel_[layer][per_q ? qh : kv].end());
        blocks.insert(pos / P);
        for (int32_t b : blocks) {
          for (int32_t j = b * P; j < std::min(pos + 1, (b + 1) * P); ++j) keys.push_back(j);
        }
      }
      // The largest difference over the channels against attention over one key set.
      auto worst = [&](const std::vector<int32_t>& ks, int& worst_ch) {
        std::vector<double> w(ks.size());
        double mx = -std::numeric_limits<double>::infinity();
        for (size_t t = 0; t < ks.size(); ++t) {
          double dot = 0;
          for (int ch = 0; ch < d; ++ch) {
            dot += static_cast<double>(q_row[qh * d + ch]) * k_hist_[layer][ks[t]][kv * d + ch];
          }
          w[t] = dot * scale;
          mx = std::max(mx, w[t]);
        }
        double sum = 0;
        for (auto& x : w) sum += x = std::exp(x - mx);
        double most = 0;
        for (int ch = 0; ch < d; ++ch) {
          double o = 0;
          for (size_t t = 0; t < ks.size(); ++t) o += w[t] * v_hist_[layer][ks[t]][kv * d + ch];
          o /= sum;
          const double got = out[(static_cast<size_t>(i) * hq + qh) * d + ch];
          // The tolerance is absolute up to |o| = 1 and relative beyond: a bf16 output carries a
          // rounding error relative to its size (its spacing is 0.0625 between 8 and 16).
          const double diff = std::abs(got - o) / std::max(1.0, std::abs(o));
          if (diff > most) {
            most = diff;
            worst_ch = ch;
          }
        }
        return most;
      };
      int worst_ch = 0;
      double diff = worst(key_sets[0], worst_ch);
      for (size_t c = 1; c < key_sets.size() && diff > tolerance; ++c) {
        int ch = 0;
        const double alt = worst(key_sets[c], ch);
        if (alt < diff) {
          diff = alt;
          worst_ch = ch;
          ++prefill_block_ties;
        }
      }
      max_diff = std::max(max_diff, diff);
      ASSERT_LE(diff, tolerance) << "layer " << layer << " pos " << pos << " q head " << qh
                                 << (retrieval ? " retrieval" : " streaming")
                                 << (sparse_decode ? " sparse decode" : "") << " channel "
                                 << worst_ch;
    }
  }
}

double SparseHarness::run(double tolerance) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int d = c_.head_dim, hq = c_.n_kv_heads * c_.group, hkv = c_.n_kv_heads;
  RopeParams rope;
  rope.theta = 10000.0f;
  rope.half_split = true;
  // Not 1, so that every backend is seen to apply YaRN's factor to q and k (scores grow by its
  // square) the same way.
  rope.attention_factor = 1.0625f;
  double max_diff = 0;
  scheduler_->add(&seq_);
  int steps_left = c_.decode_steps;
  while (true) {
    ScheduledStep step = scheduler_->schedule();
    if (step.plan.seqs.empty()) break;
    if (c_.pad_decode_to > 0 && step.plan.seqs[0].decode) {
      step.plan.device_planned = true;
      step.plan.padded_rows = c_.pad_decode_to;
    }
    const StepPlan& plan = step.plan;
    const SeqStep& s = plan.seqs[0];
    const int n = plan.n_tokens();
    if (s.decode) refresh_flags.push_back(s.refresh_selection);
    // The reference's reuse clock: refresh on interval multiples or when it has no selection.
    const bool sparse_active = s.decode && !c_.sparse.dense && s.end_pos() > c_.sparse.token_budget;
    const bool ref_refresh =
        sparse_active && (!ref_sel_valid_ || decode_step_ % c_.sparse.selector_interval == 0);
    EXPECT_EQ(s.refresh_selection, ref_refresh) << "decode step " << decode_step_;
    backend_.begin_step(plan, *cache_);
    for (int layer = 0; layer < c_.n_layers; ++layer) {
      std::vector<float> qv(static_cast<size_t>(n) * hq * d), kv(static_cast<size_t>(n) * hkv * d),
          vv(kv.size());
      for (auto* vec : {&qv, &kv, &vv}) {
        for (auto& x : *vec) x = dist(rng_);
      }
      if (s.decode && c_.query_persistence > 0 && prev_q_[layer].size() == qv.size()) {
        const double p = c_.query_persistence, f = std::sqrt(1 - p * p);
        for (size_t i = 0; i < qv.size(); ++i) {
          qv[i] = static_cast<float>(p * prev_q_[layer][i] + f * qv[i]);
        }
      }
      if (s.decode) prev_q_[layer] = qv;
      Tensor q = upload(backend_, qv, n, hq * d), k = upload(backend_, kv, n, hkv * d),
             v = upload(backend_, vv, n, hkv * d);
      Tensor out = backend_.alloc(backend_.compute_dtype(), n, hq * d);
      auto device_work = [&] {
        backend_.rope_append_kv(layer, q, k, v, rope, plan, *cache_);
        backend_.select_pages(layer, q, plan, *cache_);
        backend_.attention(layer, q, plan, *cache_, out);
      };
      if (s.decode && c_.run_decode_layer) {
        c_.run_decode_layer(device_work);
      } else {
        device_work();
      }
      // What the backend stored (bf16 on a GPU, then rounded as kv_dtype says): the reference
      // uses exactly those values.
      const auto q_rot = download(backend_, q);
      auto k_rot = download(backend_, k);
      vv = download(backend_, v);
      for (size_t row = 0; row < k_rot.size() / d; ++row) {
        round_kv_row(c_.kv_dtype, k_rot.data() + row * d, k_rot.data() + row * d, d);
        round_kv_row(c_.kv_dtype, vv.data() + row * d, vv.data() + row * d, d);
      }
      for (int i = 0; i < n; ++i) {
        k_hist_[layer].emplace_back(k_rot.begin() + static_cast<int64_t>(i) * hkv * d,
                                    k_rot.begin() + static_cast<int64_t>(i + 1) * hkv * d);
        v_hist_[layer].emplace_back(vv.begin() + static_cast<int64_t>(i) * hkv * d,
                                    vv.begin() + static_cast<int64_t>(i + 1) * hkv * d);
      }
      if (sparse_active && layer >= c_.sparse.selector_skip_layers) {
        // Interval refreshes, and (selector_drift) a selection head whose query heads' current
        // queries have drifted from the ones its selection was made for.
        const bool per_q = c_.sparse.granularity == SelectorGranularity::kQueryHead;
        for (size_t h = 0; h < ref_sel_[layer].size(); ++h) {
          const int g0 = per_q ? static_cast<int>(h) : static_cast<int>(h) * c_.group;
          const int ng = per_q ? 1 : c_.group;
          const int kvh = per_q ? static_cast<int>(h) / c_.group : static_cast<int>(h);
          if (!c_.retrieval[layer][kvh]) continue;
          bool refresh = ref_refresh;
          std::vector<float>& stored = ref_sel_q_[layer][h];
          for (int g = 0; g < ng && !refresh && c_.sparse.selector_drift > 0; ++g) {
            const float* a = q_rot.data() + static_cast<size_t>(g0 + g) * d;
            const float* b = stored.data() + static_cast<size_t>(g) * d;
            double ab = 0, aa = 0, bb = 0;
            for (int ch = 0; ch < d; ++ch) {
              ab += static_cast<double>(a[ch]) * b[ch];
              aa += static_cast<double>(a[ch]) * a[ch];
              bb += static_cast<double>(b[ch]) * b[ch];
            }
            refresh = ab / std::sqrt(aa * bb) < c_.sparse.selector_drift;
          }
          if (!refresh) continue;
          stored.assign(q_rot.begin() + static_cast<size_t>(g0) * d,
                        q_rot.begin() + static_cast<size_t>(g0 + ng) * d);
          const std::vector<double> scores =
              reference_block_scores(layer, static_cast<int>(h), s.start_pos, q_rot.data());
          ref_sel_[layer][h] = settle_ties(scores, reference_selection(scores),
                                           backend_selection(s, layer, static_cast<int>(h)));
          if (ref_refresh)
            ++ref_refreshes;
          else
            ++drift_refreshes;
        }
      }
      check_step(plan, layer, q_rot, download(backend_, out), tolerance, max_diff);
      if (testing::Test::HasFatalFailure()) return max_diff;
    }
    ref_sel_valid_ = sparse_active;
    if (s.decode) ++decode_step_;
    seq_.kv.num_tokens = s.end_pos();
    stream_pages_per_step.push_back(seq_.kv.stream_pages());
    pages_per_step.push_back(static_cast<int>(seq_.kv.pages.size()));
    if (s.want_logits) {
      if (steps_left-- == 0) break;
      seq_.tokens.push_back(0);  // a "generated" token; its Q/K/V are drawn at the next step
    }
  }
  scheduler_->remove(&seq_);
  return max_diff;
}

}  // namespace lserve::test
