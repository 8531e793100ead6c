// Gemma 3 decoder (text): the Llama-style GQA + RoPE block with Gemma's changes: embeddings
// scaled by sqrt(d_model); a norm before and after both the attention and the MLP; per-head RMS
// norms of q and k before RoPE; a GeGLU MLP (tanh gelu); and layers that attend within a sliding
// window (with their own RoPE base) interleaved with global ones. The windows are the cache's
// business (HeadMap::window, docs/sparse-attention.md); here they only pick the RoPE.
//
// Gemma's norms compute x * (1 + w). llama.cpp's GGUF converter stores 1 + w, so rms_norm's plain
// x * w is exact for GGUF weights (checked against llama.cpp's logits, tests/fixtures/
// golden_gemma3.json). The query scale query_pre_attn_scalar^-1/2 is folded into the q norm's
// weights when they are loaded (model_loader.cpp).
#include <cmath>

#include "core/error.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace lserve {
namespace {

// [rows, heads * head_dim] seen as [rows * heads, head_dim]: one norm per head.
Tensor per_head(const Tensor& t, int head_dim) {
  Tensor v = t;
  v.rows = t.rows * (t.cols / head_dim);
  v.cols = head_dim;
  v.owner = nullptr;
  return v;
}

class Gemma3Model final : public Model {
 public:
  Gemma3Model(ModelConfig config, ModelWeights weights)
      : config_(std::move(config)), w_(std::move(weights)) {
    LSERVE_CHECK(config_.layer_windows.size() == static_cast<size_t>(config_.n_layers),
                 "gemma3: every layer needs a sliding window entry (0: global)");
    global_.theta = config_.rope_theta;
    global_.half_split = config_.rope_style == RopeStyle::kHalfSplit;
    global_.freq_factors =
        config_.rope_freq_factors.empty() ? nullptr : config_.rope_freq_factors.data();
    global_.attention_factor = config_.rope_attention_factor;
    // Rope scaling (linear, in the larger Gemma 3 models) applies to the global layers only.
    local_.theta = config_.rope_theta_local;
    local_.half_split = global_.half_split;
    embed_scale_ = std::sqrt(static_cast<float>(config_.d_model));
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
    Tensor q_heads = per_head(q, c.head_dim), k_heads = per_head(k, c.head_dim);

    be.embed(w_.tok_embd, plan.token_ids, x);
    be.scale(x, embed_scale_);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w_.layers[l];
      be.rms_norm(x, L.attn_norm, c.rms_eps, h);
      const Tensor* qkv_w[] = {&L.wq, &L.wk, &L.wv};
      Tensor* qkv[] = {&q, &k, &v};
      be.matmul_many(h, qkv_w, qkv);
      be.rms_norm(q_heads, L.q_norm, c.rms_eps, q_heads);
      be.rms_norm(k_heads, L.k_norm, c.rms_eps, k_heads);
      be.rope_append_kv(l, q, k, v, c.layer_windows[l] > 0 ? local_ : global_, plan, cache);
      be.select_pages(l, q, plan, cache);
      be.attention(l, q, plan, cache, attn);
      be.matmul(attn, L.wo, h);
      be.rms_norm(h, L.post_attn_norm, c.rms_eps, h);
      be.add(x, h);

      be.rms_norm(x, L.ffn_norm, c.rms_eps, h);
      const Tensor* mlp_w[] = {&L.w_gate, &L.w_up};
      Tensor* mlp[] = {&gate, &up};
      be.matmul_many(h, mlp_w, mlp);
      be.gelu_mul(gate, up, gate);
      be.matmul(gate, L.w_down, h);
      be.rms_norm(h, L.post_ffn_norm, c.rms_eps, h);
      be.add(x, h);
    }
    return output_logits(plan, be, ws, x, w_.output_norm, w_.output, c.rms_eps, c.vocab_size);
  }

  int64_t workspace_bytes(int64_t rows, int64_t logit_rows, DType dt) const override {
    return decoder_workspace_bytes(config_, rows, logit_rows, dt);
  }

 private:
  ModelConfig config_;
  ModelWeights w_;
  RopeParams global_, local_;
  float embed_scale_ = 1.0f;
};

}  // namespace

std::unique_ptr<Model> make_gemma3_model(ModelConfig config, ModelWeights weights) {
  return std::make_unique<Gemma3Model>(std::move(config), std::move(weights));
}

}  // namespace lserve
