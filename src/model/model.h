// A model's forward pass over a StepPlan. One implementation file per architecture family.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "backend/workspace.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace lserve {

class KvCache;

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Runs the plan's new tokens through the model, appending their KV to `cache`, and returns the
  // logits [plan.logits_rows.size(), vocab] of the requested rows (of every row, padding
  // included, in a device-planned step). Activations come from `ws`; the caller has called
  // backend.begin_step(plan, cache).
  virtual Tensor forward(const StepPlan& plan, Backend& backend, KvCache& cache, Workspace& ws) = 0;
  // Workspace bytes a forward over `rows` token rows with `logit_rows` logits rows needs.
  virtual int64_t workspace_bytes(int64_t rows, int64_t logit_rows, DType dtype) const = 0;
};

// Picks the implementation for config.arch (llama, mistral and qwen2 share the Llama graph;
// gemma3 has its own).
std::unique_ptr<Model> make_model(ModelConfig config, ModelWeights weights);

// One per architecture file (llama.cpp, gemma3.cpp).
std::unique_ptr<Model> make_llama_model(ModelConfig config, ModelWeights weights);
std::unique_ptr<Model> make_gemma3_model(ModelConfig config, ModelWeights weights);

// The activations of one decoder forward over `rows` token rows, from the step's workspace: the
// residual stream x, the normed input h, q/k/v, the attention output, and the MLP's gate and up.
struct DecoderBuffers {
  Tensor x, h, q, k, v, attn, gate, up;
  DecoderBuffers(Workspace& ws, const ModelConfig& c, int64_t rows, DType dt);
};
// Workspace bytes of DecoderBuffers and output_logits together: a decoder's workspace_bytes.
int64_t decoder_workspace_bytes(const ModelConfig& c, int64_t rows, int64_t logit_rows, DType dt);

// What every decoder does last: the rows of `x` that want logits (every row in a device-planned
// step), the final norm, and the LM head into f32 logits [rows, vocab] (empty: no row wants any).
Tensor output_logits(const StepPlan& plan, Backend& be, Workspace& ws, Tensor& x,
                     const Tensor& norm, const Tensor& head, float eps, int vocab);
// Workspace bytes output_logits takes.
int64_t output_logits_bytes(int64_t logit_rows, int64_t d_model, int vocab, DType dt);

}  // namespace lserve
