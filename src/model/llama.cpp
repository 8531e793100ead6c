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
    rope_.freq_factors =
        config_.rope_freq_factors.empty() ? nullptr : config_.rope_freq_factors.data();
    rope_.attention_factor = config_.rope_attention_factor;
  }

  const ModelConfig& config() const override { return config_; }

  Tensor forward(const StepPlan& plan, Backend& be, KvCache& cache, Workspace& ws) override {
    const ModelConfig& c = config_;
    const int64_t n = plan.rows();
    LSERVE_ASSERT(n > 0);
    const DType dt = be.compute_dtype();
    ws.reset();
    DecoderBuffers b(ws, c, n, dt);
    auto& [x, h, q, k, v, attn, gate, up] = b;

    be.embed(w_.tok_embd, plan.token_ids, x);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w_.layers[l];
      be.rms_norm(x, L.attn_norm, c.rms_eps, h);
      const Tensor* qkv_w[] = {&L.wq, &L.wk, &L.wv};
      Tensor* qkv[] = {&q, &k, &v};
      be.matmul_many(h, qkv_w, qkv);
      if (c.qkv_bias) {
        be.add_bias(q, L.bq);
        be.add_bias(k, L.bk);
        be.add_bias(v, L.bv);
      }
      be.rope_append_kv(l, q, k, v, rope_, plan, cache);
      be.select_pages(l, q, plan, cache);
      be.attention(l, q, plan, cache, attn);
      be.matmul(attn, L.wo, x, /*accumulate=*/true);

      be.rms_norm(x, L.ffn_norm, c.rms_eps, h);
      const Tensor* mlp_w[] = {&L.w_gate, &L.w_up};
      Tensor* mlp[] = {&gate, &up};
      be.matmul_many(h, mlp_w, mlp);
      be.silu_mul(gate, up, gate);
      be.matmul(gate, L.w_down, x, /*accumulate=*/true);
    }
    return output_logits(plan, be, ws, x, w_.output_norm, w_.output, c.rms_eps, c.vocab_size);
  }

  int64_t workspace_bytes(int64_t rows, int64_t logit_rows, DType dt) const override {
    return decoder_workspace_bytes(config_, rows, logit_rows, dt);
  }

 private:
  ModelConfig config_;
  ModelWeights w_;
  RopeParams rope_;
};

}  // namespace

std::unique_ptr<Model> make_llama_model(ModelConfig config, ModelWeights weights) {
  return std::make_unique<LlamaModel>(std::move(config), std::move(weights));
}

}  // namespace lserve
