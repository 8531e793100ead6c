// Runs one StepPlan through the model on its backend and brings the needed logits to the host.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "model/model.h"

namespace lserve {

class ModelRunner {
 public:
  ModelRunner(Model& model, Backend& backend, KvCache& cache)
      : model_(model), backend_(backend), cache_(cache) {}

  // Returns logits [plan.logits_rows.size() * vocab] on the host.
  std::vector<float> run(const StepPlan& plan);

 private:
  Model& model_;
  Backend& backend_;
  KvCache& cache_;
};

}  // namespace lserve
