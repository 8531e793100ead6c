#include "engine/model_runner.h"

namespace lserve {

std::vector<float> ModelRunner::run(const StepPlan& plan) {
  Tensor logits = model_.forward(plan, backend_, cache_);
  std::vector<float> host(static_cast<size_t>(logits.numel()));
  if (!host.empty()) backend_.to_host(logits, host.data());
  return host;
}

}  // namespace lserve
