// The server's engine thread under failure: a backend that fails on demand (the fault-injection
// seam) makes steps fail; the loop answers every request, and reports itself unhealthy after
// the configured number of failed steps in a row, until a step succeeds again.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>

#include "backend/cpu/cpu_backend.h"
#include "engine/engine.h"
#include "server/engine_loop.h"
#include "server/metrics.h"
#include "test_util.h"

namespace lserve::server {
namespace {

// Fails every sampling call while `fail` is set (the step then throws, as it would on a lost
// device), and otherwise samples as the CPU backend does.
class FailingBackend : public CpuBackend {
 public:
  using CpuBackend::CpuBackend;
  void sample(const Tensor& logits, const StepPlan& plan) override {
    if (fail) throw std::runtime_error("injected sampling failure");
    CpuBackend::sample(logits, plan);
  }
  std::atomic<bool> fail{false};
};

RequestUpdate run_to_end(EngineLoop& loop, int max_tokens) {
  Request r;
  r.prompt = {1, 2, 3, 4, 5};
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  auto channel = std::make_shared<RequestChannel>(RequestChannel::Clock::now());
  EXPECT_EQ(loop.submit(std::move(r), channel), Admission::kAccepted);
  RequestUpdate all;
  for (int i = 0; i < 600 && !all.finished; ++i) {
    if (auto u = channel->wait(std::chrono::milliseconds(100))) all.merge(std::move(*u));
  }
  EXPECT_TRUE(all.finished) << "no final update within a minute";
  return all;
}

TEST(EngineLoopHealth, UnhealthyAfterFailedStepsInARowAndHealthyAgainAfterASuccess) {
  auto owned = std::make_unique<FailingBackend>(2);
  FailingBackend& backend = *owned;
  LoadedModel m =
      load_model(test::source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf", backend, {});
  Engine engine(std::move(owned), std::move(m), EngineConfig{});
  Metrics metrics("test");
  EngineLoopConfig config;
  config.unhealthy_after_failed_steps = 3;
  EngineLoop loop(engine, metrics, config);
  EXPECT_TRUE(loop.healthy());

  backend.fail = true;
  for (int i = 1; i <= 3; ++i) {
    const RequestUpdate u = run_to_end(loop, 4);
    EXPECT_EQ(u.finish_reason, FinishReason::kError);
    EXPECT_NE(u.error.find("injected sampling failure"), std::string::npos) << u.error;
    std::string why;
    EXPECT_EQ(loop.healthy(&why), i < 3) << "after " << i << " failed steps";
    if (i == 3) {
      EXPECT_NE(why.find("injected sampling failure"), std::string::npos) << why;
    }
  }
  EXPECT_EQ(loop.outstanding(), 0);

  // A step that succeeds (the device came back) clears the state.
  backend.fail = false;
  const RequestUpdate ok = run_to_end(loop, 4);
  EXPECT_EQ(ok.finish_reason, FinishReason::kLength);
  EXPECT_EQ(ok.completion_tokens, 4);
  EXPECT_TRUE(loop.healthy());
  loop.stop();
}

}  // namespace
}  // namespace lserve::server
