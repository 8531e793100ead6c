// A model's forward pass over a StepPlan. One implementation file per architecture family.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace lserve {

class KvCache;

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Runs the plan's new tokens through the model, appending their KV to `cache`, and returns the
  // logits [plan.logits_rows.size(), vocab] of the requested rows.
  virtual Tensor forward(const StepPlan& plan, Backend& backend, KvCache& cache) = 0;
};

// Picks the implementation for config.arch (llama, mistral and qwen2 share the Llama graph).
std::unique_ptr<Model> make_model(ModelConfig config, ModelWeights weights);

}  // namespace lserve
