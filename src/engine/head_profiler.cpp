#include "engine/head_profiler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_attention.h"
#include "core/error.h"
#include "engine/offline.h"
#include "kv/kv_cache.h"
#include "sparse/passkey.h"

namespace lserve {
namespace {

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
    const int P = cache.page_size(), ctx = s.end_pos();
    const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
    std::vector<float> k(static_cast<size_t>(ctx) * d), v(k.size()), o(static_cast<size_t>(d));
    std::vector<int32_t> pos(ctx);
    for (int j = 0; j < ctx; ++j) pos[j] = j;
    const int row0 = first_probe - s.start_pos;
    const int nq = ctx - first_probe;
    for (int h = 0; h < hkv; ++h) {
      for (int j = 0; j < ctx; j += P) {
        const int64_t row =
            (static_cast<int64_t>(plan.pages_of(0)[j / P]) * nr + cache.heads().slot[layer][h]) * P;
        const int n = std::min(P, ctx - j);
        std::memcpy(&k[static_cast<size_t>(j) * d],
                    cache.k(HeadClass::kRetrieval, layer).as<float>() + row * d,
                    n * d * sizeof(float));
        std::memcpy(&v[static_cast<size_t>(j) * d],
                    cache.v(HeadClass::kRetrieval, layer).as<float>() + row * d,
                    n * d * sizeof(float));
      }
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

}  // namespace

HeadProfile profile_heads(Model& model, CpuBackend& backend,
                          const std::vector<CalibrationPrompt>& prompts,
                          const HeadProfileOptions& o,
                          const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  LSERVE_CHECK(!prompts.empty(), "profile-heads needs calibration prompts");
  Probe probe(c.n_layers, c.n_kv_heads, o);
  backend.set_attention_observer(
      [&](int layer, const Tensor& q, const StepPlan& plan, KvCache& cache, const Tensor& out) {
        probe.observe(layer, q, plan, cache, out);
      });
  HeadProfile result;
  result.error.assign(c.n_layers, std::vector<double>(c.n_kv_heads, 0.0));
  const int total = static_cast<int>(prompts.size());
  try {
    for (const CalibrationPrompt& p : prompts) {
      LSERVE_CHECK(p.probe_queries >= 1, "probe_queries must be positive");
      std::vector<int32_t> tokens = p.tokens;
      if (static_cast<int>(tokens.size()) > c.max_context) tokens.resize(c.max_context);
      probe.set_probe_queries(p.probe_queries);
      OfflineRunOptions run;
      run.chunk = 2048;
      run.all_logits = false;
      sequence_logits(model, backend, tokens, run);
      const auto err = probe.take();
      for (int l = 0; l < c.n_layers; ++l) {
        for (int h = 0; h < c.n_kv_heads; ++h) result.error[l][h] += err[l][h] / total;
      }
      ++result.prompts;
      if (progress) progress(result.prompts, total);
    }
  } catch (...) {
    backend.set_attention_observer(nullptr);
    throw;
  }
  backend.set_attention_observer(nullptr);
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
