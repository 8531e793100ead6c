#include "model/model.h"

#include "core/error.h"

namespace lserve {
namespace {

// Every row of the step wants logits, in order: the final norm can run on x itself.
bool all_rows(const StepPlan& plan) {
  if (plan.logits_rows.size() != static_cast<size_t>(plan.n_tokens())) return false;
  for (size_t i = 0; i < plan.logits_rows.size(); ++i) {
    if (plan.logits_rows[i] != static_cast<int32_t>(i)) return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<Model> make_model(ModelConfig config, ModelWeights weights) {
  if (config.arch == "llama" || config.arch == "mistral" || config.arch == "qwen2") {
    return make_llama_model(std::move(config), std::move(weights));
  }
  if (config.arch == "gemma3") return make_gemma3_model(std::move(config), std::move(weights));
  fail("architecture '{}' is not supported (llama, mistral, qwen2, gemma3)", config.arch);
}

Tensor output_logits(const StepPlan& plan, Backend& be, Workspace& ws, Tensor& x,
                     const Tensor& norm, const Tensor& head, float eps, int vocab) {
  // A device-planned step samples every row (padding too); otherwise only the requested rows.
  const int64_t rows = plan.device_planned ? x.rows : static_cast<int64_t>(plan.logits_rows.size());
  if (rows == 0) return Tensor{};
  Tensor last = x;
  if (!plan.device_planned && !all_rows(plan)) {
    last = ws.alloc(x.dtype, rows, x.cols);
    be.gather_rows(x, plan.logits_rows, last);
  }
  be.rms_norm(last, norm, eps, last);
  // Logits stay f32 on every backend: bf16 would round them by ~0.1 at typical magnitudes.
  Tensor logits = ws.alloc(DType::F32, rows, vocab);
  be.matmul(last, head, logits);
  return logits;
}

int64_t output_logits_bytes(int64_t logit_rows, int64_t d_model, int vocab, DType dt) {
  return Workspace::footprint(dt, logit_rows, d_model) +
         Workspace::footprint(DType::F32, logit_rows, vocab);
}

DecoderBuffers::DecoderBuffers(Workspace& ws, const ModelConfig& c, int64_t rows, DType dt)
    : x(ws.alloc(dt, rows, c.d_model)),
      h(ws.alloc(dt, rows, c.d_model)),
      q(ws.alloc(dt, rows, c.q_dim())),
      k(ws.alloc(dt, rows, c.kv_dim())),
      v(ws.alloc(dt, rows, c.kv_dim())),
      attn(ws.alloc(dt, rows, c.q_dim())),
      gate(ws.alloc(dt, rows, c.d_ff)),
      up(ws.alloc(dt, rows, c.d_ff)) {}

int64_t decoder_workspace_bytes(const ModelConfig& c, int64_t rows, int64_t logit_rows, DType dt) {
  auto f = [&](int64_t cols) { return Workspace::footprint(dt, rows, cols); };
  return 2 * f(c.d_model) + 2 * f(c.q_dim()) + 2 * f(c.kv_dim()) + 2 * f(c.d_ff) +
         output_logits_bytes(logit_rows, c.d_model, c.vocab_size, dt);
}

}  // namespace lserve
