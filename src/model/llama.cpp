// Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2, SmolLM): pre-norm blocks of GQA attention
// with RoPE and a SwiGLU MLP. Qwen2 differs only by the QKV bias, which the weights carry.
#include "core/error.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace lserve {
namespace {

class LlamaModel final : public Model {
 public:
  LlamaModel(ModelConfig config, ModelWeights weights)
      : config_(std::move(config)), w_(std::move(weights)) {
    rope_.theta = config_.rope_theta;
    rope_.half_split = config_.rope_style == RopeStyle::kHalfSplit;
    rope_.freq_factors = config_.rope_freq_factors.empty() ? nullptr : config_.rope_freq_factors.data();
  }

  const ModelConfig& config() const override { return config_; }

  Tensor forward(const StepPlan& plan, Backend& be, KvCache& cache) override {
    const ModelConfig& c = config_;
    const int64_t n = plan.n_tokens();
    LSERVE_ASSERT(n > 0);
    const DType dt = be.compute_dtype();
    Tensor x = be.alloc(dt, n, c.d_model);
    Tensor h = be.alloc(dt, n, c.d_model);
    Tensor q = be.alloc(dt, n, c.q_dim());
    Tensor k = be.alloc(dt, n, c.kv_dim());
    Tensor v = be.alloc(dt, n, c.kv_dim());
    Tensor attn = be.alloc(dt, n, c.q_dim());
    Tensor gate = be.alloc(dt, n, c.d_ff);
    Tensor up = be.alloc(dt, n, c.d_ff);

    be.begin_step(plan, cache);
    be.embed(w_.tok_embd, plan.token_ids, x);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w_.layers[l];
      be.rms_norm(x, L.attn_norm, c.rms_eps, h);
      be.matmul(h, L.wq, q);
      be.matmul(h, L.wk, k);
      be.matmul(h, L.wv, v);
      if (c.qkv_bias) {
        be.add_bias(q, L.bq);
        be.add_bias(k, L.bk);
        be.add_bias(v, L.bv);
      }
      be.rope_append_kv(l, q, k, v, rope_, plan, cache);
      be.select_pages(l, q, plan, cache);
      be.attention(l, q, plan, cache, attn);
      be.matmul(attn, L.wo, h);
      be.add(x, h);

      be.rms_norm(x, L.ffn_norm, c.rms_eps, h);
      be.matmul(h, L.w_gate, gate);
      be.matmul(h, L.w_up, up);
      be.silu_mul(gate, up, gate);
      be.matmul(gate, L.w_down, h);
      be.add(x, h);
    }
    const auto rows = static_cast<int64_t>(plan.logits_rows.size());
    if (rows == 0) return Tensor{};
    Tensor last = be.alloc(dt, rows, c.d_model);
    be.gather_rows(x, plan.logits_rows, last);
    be.rms_norm(last, w_.output_norm, c.rms_eps, last);
    // Logits stay f32 on every backend: bf16 would round them by ~0.1 at typical magnitudes.
    Tensor logits = be.alloc(DType::F32, rows, c.vocab_size);
    be.matmul(last, w_.output, logits);
    return logits;
  }

 private:
  ModelConfig config_;
  ModelWeights w_;
  RopeParams rope_;
};

}  // namespace

std::unique_ptr<Model> make_model(ModelConfig config, ModelWeights weights) {
  if (config.arch == "llama" || config.arch == "mistral" || config.arch == "qwen2") {
    return std::make_unique<LlamaModel>(std::move(config), std::move(weights));
  }
  fail("architecture '{}' is not supported (llama, mistral, qwen2)", config.arch);
}

}  // namespace lserve
