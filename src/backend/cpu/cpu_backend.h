// The CPU backend: f32 everywhere, GEMMs through OpenBLAS, element-wise work and attention spread
// over a thread pool. It is the reference every other backend is tested against, so it favours
// plain, checkable code over speed where the two conflict.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "core/thread_pool.h"

namespace lserve {

// Not final: tests derive from it to inject failures into one op.
class CpuBackend : public Backend {
 public:
  explicit CpuBackend(int threads);

  std::string name() const override { return "cpu"; }
  PrefillBlockStats prefill_block_stats() const override {
    return {blocks_kept_.load(), blocks_causal_.load()};
  }
  bool supports_kv_dtype(KvDtype) const override { return true; }  // emulated in f32 pools
  DType compute_dtype() const override { return DType::F32; }
  int threads() const { return pool_.size(); }

  Tensor alloc(DType dtype, int64_t rows, int64_t cols) override;
  Tensor upload(const float* host, int64_t rows, int64_t cols) override;
  Tensor random(int64_t rows, int64_t cols, uint64_t seed, float scale) override;
  void fill(Tensor& t, float value) override;
  void fill_random(Tensor& t, uint64_t seed, float scale) override;
  void to_host(const Tensor& t, float* host) override;
  void write(Tensor& t, const void* host_bytes) override;

  void embed(const Tensor& table, std::span<const int32_t> ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate = false) override;
  void add_bias(Tensor& x, const Tensor& bias) override;
  void add(Tensor& x, const Tensor& y) override;
  void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void scale(Tensor& x, float s) override;
  void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) override;
  void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) override;
  void rope_append_kv(int layer, Tensor& q, Tensor& k, const Tensor& v, const RopeParams& rope,
                      const StepPlan& plan, KvCache& cache) override;
  void select_pages(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache) override;
  void attention(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
                 Tensor& out) override;

  void sample(const Tensor& logits, const StepPlan& plan) override;
  std::span<const SampledToken> sampled() override { return sampled_; }

  ThreadPool& pool() { return pool_; }

  // Called after every attention op with its inputs and output (the head profiler's probe).
  using AttentionObserver = std::function<void(int layer, const Tensor& q, const StepPlan& plan,
                                               KvCache& cache, const Tensor& out)>;
  void set_attention_observer(AttentionObserver observer) { observer_ = std::move(observer); }

 private:
  ThreadPool pool_;
  AttentionObserver observer_;
  std::atomic<int64_t> blocks_kept_{0}, blocks_causal_{0};  // prefill_block_stats()
  std::vector<SampledToken> sampled_;
};

}  // namespace lserve
