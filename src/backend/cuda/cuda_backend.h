// The CUDA backend: bf16 weights and activations with f32 accumulation; GEMMs through cuBLASLt;
// custom kernels (kernels/*.cuh) for norms, RoPE + KV append + page statistics, page selection and
// attention. The host plans each step once (begin_step), the device runs it; all work goes to one
// stream so a decode step can be captured in a CUDA graph.
#pragma once

#include <memory>

#include "backend/attention_plan.h"
#include "backend/backend.h"

namespace lserve {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device = 0);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  DType compute_dtype() const override { return DType::BF16; }

  Tensor alloc(DType dtype, int64_t rows, int64_t cols) override;
  Tensor upload(const float* host, int64_t rows, int64_t cols) override;
  Tensor random(int64_t rows, int64_t cols, uint64_t seed, float scale) override;
  void fill(Tensor& t, float value) override;
  void fill_random(Tensor& t, uint64_t seed, float scale) override;
  void to_host(const Tensor& t, float* host) override;
  void write(Tensor& t, const void* host_bytes) override;
  // The stream all work is queued on (cudaStream_t), for timing with events.
  void* stream_handle() const;
  void synchronize() override;
  int64_t free_memory_bytes() const override;
  int64_t total_memory_bytes() const override;
  DeviceTime device_time() const override;
  // bf16 is the pools' native type; FP8 pools are not implemented on CUDA yet.
  // The tensor-core kernels take 64 and 128, the reference attention kernel 256 (Gemma 3).
  bool supports_head_dim(int d) const override { return d == 64 || d == 128 || d == 256; }
  std::string head_dims_supported() const override { return "64, 128 or 256"; }
  // The estimate reads bf16 keys at head_dim 64 or 128 (kernels/prefill_blocks.cuh) and needs
  // its shared memory (query rows, key stages; per estimate) to fit one block.
  bool supports_prefill_sparsity(KvDtype t, int head_dim, PrefillEstimate e) const override;
  // Summed by the keep kernel on the device; reading them waits for the stream.
  PrefillBlockStats prefill_block_stats() const override;
  std::string prefill_sparsity_supported() const override;
  bool supports_kv_dtype(KvDtype) const override { return true; }
  DType kv_storage_dtype(KvDtype t) const override {
    return t == KvDtype::kFp8 ? DType::F8E4M3 : DType::BF16;
  }
  void begin_step(const StepPlan& plan, KvCache& cache) override;
  bool can_record() const override;
  std::unique_ptr<StepRecording> record(const std::function<void()>& work) override;

  void embed(const Tensor& table, std::span<const int32_t> ids, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void matmul(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate = false) override;
  void matmul_many(const Tensor& x, std::span<const Tensor* const> ws,
                   std::span<Tensor* const> outs) override;
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
  std::span<const SampledToken> sampled() override;

  // Which attention kernels run. kAuto: on an sm_90 device the warp-specialised prefill
  // (attention_ws.cuh) for bf16 pools and the wgmma prefill tiles for fp8 ones, the portable
  // mma.sync kernel elsewhere; tests and benchmarks also force the wgmma tiles for bf16 pools
  // too (kWgmmaTiles, Hopper only; the default before the warp-specialised kernel overtook
  // them), the portable kernel or the reference kernel.
  enum class AttnKernels { kAuto, kWgmmaTiles, kPortable, kReference };
  void set_attention_kernels(AttnKernels k) { attn_kernels_ = k; }
  // Tuning hook (bench/attention_bench): the shortest key range a decode item is split into.
  void set_min_split_keys(int keys) { min_split_keys_ = keys; }

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  bool device_planned_ = false;  // the current step's kernels derive their work on the device
  int sampled_rows_ = 0;
  AttnKernels attn_kernels_ = AttnKernels::kAuto;
  int min_split_keys_ = AttentionPlanConfig{}.min_split_keys;
};

// Whether a CUDA device can be used here (false on machines without a GPU or driver).
bool cuda_device_available(std::string* why = nullptr);

}  // namespace lserve
