#include "engine/head_profiler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_attention.h"
#include "core/error.h"
#include "engine/offline.h"
#include "kv/kv_cache.h"
#include "sparse/passkey.h"
#include "sparse/prefill_blocks.h"

namespace lserve {
namespace {

// KV head h's keys (or values) of positions 0 .. ctx - 1 in layer `layer`, from the retrieval pool
// of the step's only sequence (every head is a retrieval head while profiling), into dst.
void gather_kv(const StepPlan& plan, KvCache& cache, int layer, int h, int ctx, float* dst,
               bool values = false) {
  const int d = cache.config().head_dim, P = cache.page_size();
  const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
  const float* pool =
      (values ? cache.v(HeadClass::kRetrieval, layer) : cache.k(HeadClass::kRetrieval, layer))
          .as<float>();
  for (int j = 0; j < ctx; j += P) {
    const int64_t row =
        (static_cast<int64_t>(plan.pages_of(0)[j / P]) * nr + cache.heads().slot[layer][h]) * P;
    std::memcpy(dst + static_cast<size_t>(j) * d, pool + row * d,
                std::min(P, ctx - j) * d * sizeof(float));
  }
}

// Accumulates, per (layer, KV head), ||o_stream - o_full||^2 and ||o_full||^2 over the probe rows.
class Probe {
 public:
  Probe(int n_layers, int n_kv, const HeadProfileOptions& o)
      : o_(o), diff_(n_layers, std::vector<double>(n_kv)), norm_(diff_) {}

  void set_probe_queries(int n) { o_.probe_queries = n; }

  void observe(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
               const Tensor& out) {
    // A layer with the model's own sliding window is a streaming head whatever its score, and
    // its KV is not in the retrieval pool read below.
    if (cache.heads().model_window(layer) > 0) return;
    const SeqStep& s = plan.seqs[0];
    const int first_probe = std::max(0, s.end_pos() - o_.probe_queries);
    if (s.end_pos() <= first_probe || s.start_pos > first_probe) return;  // not the final chunk
    const int d = cache.config().head_dim, hkv = cache.config().n_kv_heads;
    const int group = static_cast<int>(q.cols / d) / hkv;
    const int ctx = s.end_pos();
    std::vector<float> k(static_cast<size_t>(ctx) * d), v(k.size()), o(static_cast<size_t>(d));
    std::vector<int32_t> pos(ctx);
    for (int j = 0; j < ctx; ++j) pos[j] = j;
    const int row0 = first_probe - s.start_pos;
    const int nq = ctx - first_probe;
    for (int h = 0; h < hkv; ++h) {
      gather_kv(plan, cache, layer, h, ctx, k.data());
      gather_kv(plan, cache, layer, h, ctx, v.data(), /*values=*/true);
      for (int g = 0; g < group; ++g) {
        const int qh = h * group + g;
        std::vector<float> streamed(static_cast<size_t>(nq) * d);
        AttendArgs a;
        a.q = q.as<float>() + static_cast<int64_t>(s.q_offset + row0) * q.cols + qh * d;
        a.q_stride = q.cols;
        a.q_pos = plan.positions.data() + s.q_offset + row0;
        a.nq = nq;
        a.k = k.data();
        a.v = v.data();
        a.k_pos = pos.data();
        a.nk = ctx;
        a.head_dim = d;
        a.scale = 1.0f / std::sqrt(static_cast<float>(d));
        a.vis = Visibility{o_.sink_tokens, o_.local_tokens};
        a.out = streamed.data();
        a.out_stride = d;
        attend_direct(a);
        for (int r = 0; r < nq; ++r) {
          const float* full =
              out.as<float>() + static_cast<int64_t>(s.q_offset + row0 + r) * out.cols + qh * d;
          for (int c = 0; c < d; ++c) {
            const double e = streamed[static_cast<size_t>(r) * d + c] - full[c];
            diff_[layer][h] += e * e;
            norm_[layer][h] += static_cast<double>(full[c]) * full[c];
          }
        }
      }
    }
  }

  // Relative error of this prompt per head; resets the accumulators.
  std::vector<std::vector<double>> take() {
    auto err = diff_;
    for (size_t l = 0; l < err.size(); ++l) {
      for (size_t h = 0; h < err[l].size(); ++h) {
        err[l][h] = norm_[l][h] > 0 ? diff_[l][h] / norm_[l][h] : 0.0;
        diff_[l][h] = norm_[l][h] = 0;
      }
    }
    return err;
  }

 private:
  HeadProfileOptions o_;
  std::vector<std::vector<double>> diff_, norm_;
};

// The recall of dynamic prefill sparsity's kept blocks at the probed rows (prefill_recall).
class RecallProbe {
 public:
  RecallProbe(const std::vector<double>& thresholds, PrefillEstimate estimate)
      : acc_(thresholds.size()), estimate_(estimate) {
    for (size_t i = 0; i < thresholds.size(); ++i) acc_[i].threshold = thresholds[i];
  }

  void set_probe_queries(int n) { probe_queries_ = n; }

  void observe(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache) {
    if (cache.heads().model_window(layer) > 0) return;
    const SeqStep& s = plan.seqs[0];
    const int ctx = s.end_pos(), first_probe = std::max(0, ctx - probe_queries_);
    if (s.start_pos > first_probe) return;  // not the final chunk
    const int d = cache.config().head_dim, hkv = cache.config().n_kv_heads;
    const int group = static_cast<int>(q.cols / d) / hkv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<float> k(static_cast<size_t>(ctx) * d);
    for (int h = 0; h < hkv; ++h) {
      gather_kv(plan, cache, layer, h, ctx, k.data());
      int32_t block = -1;
      std::vector<std::vector<int32_t>> kept;  // per threshold, for `block`
      for (int pos = first_probe; pos < ctx; ++pos) {
        if (pos / kPrefillBlock != block) {
          // The estimate of pos's block from the chunk's rows in it, as prefill makes it.
          block = pos / kPrefillBlock;
          const int r0 = std::max(block * kPrefillBlock, s.start_pos) - s.start_pos;
          const int r1 = std::min((block + 1) * kPrefillBlock, ctx) - s.start_pos;
          PrefillBlockQuery in;
          in.q = q.as<float>() + static_cast<int64_t>(s.q_offset + r0) * q.cols + h * group * d;
          in.q_stride = q.cols;
          in.q_pos = plan.positions.data() + s.q_offset + r0;
          in.nq = r1 - r0;
          in.group = group;
          in.head_dim = d;
          in.k = k.data();
          in.nk = s.start_pos + r1;
          in.scale = scale;
          const std::vector<double> mass = prefill_block_mass(in, estimate_);
          kept.clear();
          for (const PrefillRecall& a : acc_)
            kept.push_back(keep_prefill_blocks(mass, a.threshold));
        }
        for (int g = 0; g < group; ++g) {
          const float* qr = q.as<float>() +
                            static_cast<int64_t>(s.q_offset + pos - s.start_pos) * q.cols +
                            (h * group + g) * d;
          const std::vector<double> share = block_shares(qr, k.data(), pos, d, scale);
          for (size_t i = 0; i < acc_.size(); ++i) {
            double covered = 0;
            for (int32_t b : kept[i]) covered += share[b];
            PrefillRecall& a = acc_[i];
            a.mean += covered;
            a.min = std::min(a.min, covered);
            a.below += covered < a.threshold - 1e-9 ? 1 : 0;  // 1e-9: the sum's rounding
            a.blocks += static_cast<double>(kept[i].size()) / (block + 1);
            ++a.rows;
          }
        }
      }
    }
  }

  std::vector<PrefillRecall> result() const {
    std::vector<PrefillRecall> r = acc_;
    for (PrefillRecall& a : r) {
      const double n = static_cast<double>(std::max<int64_t>(a.rows, 1));
      a.mean /= n;
      a.below /= n;
      a.blocks /= n;
    }
    return r;
  }

 private:
  // Row q's exact causal softmax over keys 0 .. pos, summed per key block.
  static std::vector<double> block_shares(const float* q, const float* k, int pos, int d,
                                          float scale) {
    std::vector<double> sc(pos + 1);
    double mx = -1e300;
    for (int j = 0; j <= pos; ++j) {
      double dot = 0;
      for (int c = 0; c < d; ++c)
        dot += static_cast<double>(q[c]) * k[static_cast<size_t>(j) * d + c];
      sc[j] = dot * scale;
      mx = std::max(mx, sc[j]);
    }
    double sum = 0;
    for (double& x : sc) sum += x = std::exp(x - mx);
    std::vector<double> share(pos / kPrefillBlock + 1, 0.0);
    for (int j = 0; j <= pos; ++j) share[j / kPrefillBlock] += sc[j] / sum;
    return share;
  }

  std::vector<PrefillRecall> acc_;
  PrefillEstimate estimate_;
  int probe_queries_ = 1;
};

// Prefills each prompt (truncated to the model's context) with `observe` as the backend's
// attention observer, calling start(prompt) before each and finish() after.
void run_probed(Model& model, CpuBackend& backend, const std::vector<CalibrationPrompt>& prompts,
                CpuBackend::AttentionObserver observe,
                const std::function<void(const CalibrationPrompt&)>& start,
                const std::function<void()>& finish) {
  backend.set_attention_observer(std::move(observe));
  try {
    for (const CalibrationPrompt& p : prompts) {
      LSERVE_CHECK(p.probe_queries >= 1, "probe_queries must be positive");
      std::vector<int32_t> tokens = p.tokens;
      if (static_cast<int>(tokens.size()) > model.config().max_context) {
        tokens.resize(model.config().max_context);
      }
      start(p);
      OfflineRunOptions run;
      run.chunk = 2048;
      run.all_logits = false;
      sequence_logits(model, backend, tokens, run);
      finish();
    }
  } catch (...) {
    backend.set_attention_observer(nullptr);
    throw;
  }
  backend.set_attention_observer(nullptr);
}

}  // namespace

std::vector<PrefillRecall> prefill_recall(Model& model, CpuBackend& backend,
                                          const std::vector<CalibrationPrompt>& prompts,
                                          const std::vector<double>& thresholds,
                                          PrefillEstimate estimate,
                                          const std::function<void(int, int)>& progress) {
  LSERVE_CHECK(!prompts.empty(), "prefill recall needs calibration prompts");
  for (double t : thresholds) {
    LSERVE_CHECK(t > 0 && t <= 1, "prefill recall threshold {} must be in (0, 1]", t);
  }
  RecallProbe probe(thresholds, estimate);
  run_probed(
      model, backend, prompts,
      [&](int layer, const Tensor& q, const StepPlan& plan, KvCache& cache, const Tensor&) {
        probe.observe(layer, q, plan, cache);
      },
      [&](const CalibrationPrompt& p) { probe.set_probe_queries(p.probe_queries); },
      [&, done = 0]() mutable {
        if (progress) progress(++done, static_cast<int>(prompts.size()));
      });
  return probe.result();
}

HeadProfile profile_heads(Model& model, CpuBackend& backend,
                          const std::vector<CalibrationPrompt>& prompts,
                          const HeadProfileOptions& o,
                          const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  LSERVE_CHECK(!prompts.empty(), "profile-heads needs calibration prompts");
  Probe probe(c.n_layers, c.n_kv_heads, o);
  HeadProfile result;
  result.error.assign(c.n_layers, std::vector<double>(c.n_kv_heads, 0.0));
  const int total = static_cast<int>(prompts.size());
  run_probed(
      model, backend, prompts,
      [&](int layer, const Tensor& q, const StepPlan& plan, KvCache& cache, const Tensor& out) {
        probe.observe(layer, q, plan, cache, out);
      },
      [&](const CalibrationPrompt& p) { probe.set_probe_queries(p.probe_queries); },
      [&] {
        const auto err = probe.take();
        for (int l = 0; l < c.n_layers; ++l) {
          for (int h = 0; h < c.n_kv_heads; ++h) result.error[l][h] += err[l][h] / total;
        }
        ++result.prompts;
        if (progress) progress(result.prompts, total);
      });
  double mx = 0;
  for (const auto& row : result.error) mx = std::max(mx, *std::max_element(row.begin(), row.end()));
  result.pattern.gates = result.error;
  for (auto& row : result.pattern.gates) {
    for (auto& g : row) g = mx > 0 ? g / mx : 0.0;
  }
  return result;
}

HeadProfile profile_heads(Model& model, CpuBackend& backend, const Tokenizer& tokenizer,
                          const HeadProfileOptions& o,
                          const std::function<void(int, int)>& progress) {
  LSERVE_CHECK(!o.lengths.empty() && !o.depths.empty(), "profile-heads needs lengths and depths");
  std::vector<CalibrationPrompt> prompts;
  for (int len : o.lengths) {
    for (double depth : o.depths) {
      // ~1.3 tokens per filler word for byte-level BPE vocabularies.
      const auto prompt =
          make_passkey_prompt(std::max(50, len * 3 / 4), depth, o.seed + prompts.size());
      prompts.push_back(
          {tokenizer.encode(prompt.text, false, tokenizer.add_bos()), o.probe_queries});
    }
  }
  return profile_heads(model, backend, prompts, o, progress);
}

}  // namespace lserve
