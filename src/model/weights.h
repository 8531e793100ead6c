// The weights of a Llama-family or Gemma 3 model on a backend, under format-independent names.
#pragma once

#include <vector>

#include "backend/tensor.h"

namespace lserve {

struct LayerWeights {
  Tensor attn_norm;       // [1, d_model]
  Tensor wq, wk, wv, wo;  // [q_dim, d_model], [kv_dim, d_model] x2, [d_model, q_dim]
  Tensor bq, bk, bv;      // [1, q_dim], [1, kv_dim] x2; empty without QKV bias
  Tensor ffn_norm;        // [1, d_model]
  Tensor w_gate, w_up;    // [d_ff, d_model]
  Tensor w_down;          // [d_model, d_ff]
  // Gemma 3 only (empty otherwise): per-head norms of q and k, [1, head_dim], and the norms of
  // the attention and MLP outputs before they join the residual, [1, d_model].
  Tensor q_norm, k_norm;
  Tensor post_attn_norm, post_ffn_norm;
};

struct ModelWeights {
  Tensor tok_embd;     // [vocab, d_model]
  Tensor output_norm;  // [1, d_model]
  Tensor output;       // [vocab, d_model]; shares tok_embd's memory when embeddings are tied
  std::vector<LayerWeights> layers;
};

}  // namespace lserve
