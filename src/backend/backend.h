// The backend interface: every op the model needs, implemented once per device. The model's
// forward pass (src/model/) is written only against this interface; the CPU backend is the
// reference every other backend is tested against.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/sampling.h"
#include "backend/tensor.h"
#include "kv/kv_dtype.h"
#include "kv/step_plan.h"
#include "sparse/prefill_blocks.h"

namespace lserve {

class KvCache;
struct ModelConfig;

struct RopeParams {
  float theta = 10000.0f;
  bool half_split = true;  // NEOX pairing (i, i+d/2); false = adjacent pairs (2i, 2i+1)
  const float* freq_factors = nullptr;  // host, head_dim/2 divisors, or null
  // cos and sin are multiplied by it (YaRN's attention factor: every q.k score grows by its
  // square); 1 for every other scaling.
  float attention_factor = 1.0f;
};

// theta^(-2i/d) / freq_factors[i] for i < d/2: the rotation speed of each channel pair.
std::vector<float> rope_inverse_frequencies(const RopeParams& rope, int head_dim);

// A step's device work recorded once and replayed (a CUDA graph): every replay reads the step
// tables that begin_step wrote since, at the addresses the recording saw.
class StepRecording {
 public:
  virtual ~StepRecording() = default;
  // False (nothing launched) when the backend has since moved a buffer the recording uses:
  // record the step again.
  virtual bool replay() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The dtype activations and weights use on this backend.
  virtual DType compute_dtype() const = 0;

  // --- memory -------------------------------------------------------------------------------
  virtual Tensor alloc(DType dtype, int64_t rows, int64_t cols) = 0;
  // Weight from host f32 data, converted to the backend's compute dtype.
  virtual Tensor upload(const float* host, int64_t rows, int64_t cols) = 0;
  // Weight filled with uniform(-scale, scale) noise from `seed` (dummy weights, no host copy).
  virtual Tensor random(int64_t rows, int64_t cols, uint64_t seed, float scale) = 0;
  virtual void fill(Tensor& t, float value) = 0;
  // t = uniform(-scale, scale) noise from `seed` (any dtype the backend stores; synthetic KV).
  // F8E4M3 elements span E4M3's whole range instead (their row scales say what they mean).
  virtual void fill_random(Tensor& t, uint64_t seed, float scale) = 0;
  virtual void to_host(const Tensor& t, float* host) = 0;  // converts to f32
  // Copies t.nbytes() raw bytes from the host into t (tables of integers).
  virtual void write(Tensor& t, const void* host_bytes) = 0;
  virtual void synchronize() {}
  // Device memory still free, for sizing the KV cache; -1 where it does not apply (host memory).
  virtual int64_t free_memory_bytes() const { return -1; }
  // The device's whole memory, -1 where it does not apply.
  virtual int64_t total_memory_bytes() const { return -1; }
  // Device time of the steps that sampled so far (from begin_step's first device work to the
  // copy of the sampled tokens), so benchmarks can tell device time from host time. steps < 0:
  // the backend does not measure it (the CPU's steps are all host time).
  struct DeviceTime {
    double seconds = 0;
    int64_t steps = -1;
  };
  virtual DeviceTime device_time() const { return {}; }
  // Whether the attention ops take heads of this size (checked when a model is loaded, so an
  // unsupported model fails at start-up, not on its first request).
  virtual bool supports_head_dim(int) const { return true; }
  // The head sizes it takes, in words, for the error when a model's is not among them.
  virtual std::string head_dims_supported() const { return "any"; }
  // Whether attention() applies SparseAttentionConfig::prefill_sparsity (dynamic block-sparse
  // prefill of retrieval heads) for KV stored as `kv_dtype`, heads of `head_dim` and blocks
  // chosen by `estimate`, and where it does, in words (for the error when it does not).
  virtual bool supports_prefill_sparsity(KvDtype, int, PrefillEstimate) const { return true; }
  virtual std::string prefill_sparsity_supported() const { return "always"; }
  // What dynamic prefill sparsity kept so far: key blocks read, of the causal ones the estimates
  // chose from (summed over layers, KV heads and query blocks).
  struct PrefillBlockStats {
    int64_t kept = 0, causal = 0;
  };
  virtual PrefillBlockStats prefill_block_stats() const { return {}; }
  // Whether rope_append_kv stores K/V rounded as `t` says (kv/kv_dtype.h).
  virtual bool supports_kv_dtype(KvDtype t) const { return t == KvDtype::kAuto; }
  // The element type of the K/V pools for `t`: the compute dtype where the rounding is emulated,
  // F8E4M3 where the backend stores fp8 itself (with a scale per row, KvCache::k_scale).
  virtual DType kv_storage_dtype(KvDtype) const { return compute_dtype(); }
  // Called once per step before its ops: a device backend uploads the plan's tables here (plan
  // on the host once per step, run on the device). Never waits for the device.
  virtual void begin_step(const StepPlan& plan, KvCache& cache) {}
  // Whether record() works: the backend runs device-planned steps (plan.device_planned).
  virtual bool can_record() const { return false; }
  // Runs `work` (the ops of a device-planned step) with its device launches recorded instead of
  // executed.
  virtual std::unique_ptr<StepRecording> record(const std::function<void()>& work) {
    return nullptr;
  }

  // --- model ops (x, out: [n_tokens, features]) -----------------------------------------
  // out[i] = table[ids[i]]. In a device-planned step, ids are the plan's token_ids and rows past
  // them (padding) get table[0].
  virtual void embed(const Tensor& table, std::span<const int32_t> ids, Tensor& out) = 0;
  // out = x / rms(x) * w, per row
  virtual void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) = 0;
  // out[n, o] = sum_i x[n, i] * w[o, i]   (x @ w^T); out may be F32 even where activations are
  // not (logits). With accumulate: out[n, o] += that sum (the residual stream, one rounding).
  virtual void matmul(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate = false) = 0;
  // outs[j] = x @ ws[j]^T for every j: projections of one input (Q/K/V, gate/up), in one launch
  // where the backend can.
  virtual void matmul_many(const Tensor& x, std::span<const Tensor* const> ws,
                           std::span<Tensor* const> outs) {
    for (size_t j = 0; j < ws.size(); ++j) matmul(x, *ws[j], *outs[j]);
  }
  // x[n, :] += bias[0, :]
  virtual void add_bias(Tensor& x, const Tensor& bias) = 0;
  // x += y
  virtual void add(Tensor& x, const Tensor& y) = 0;
  // out[n, j] = silu(gate[n, j]) * up[n, j]
  virtual void silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // x *= s (Gemma's embedding scale). The CPU and CUDA backends implement it and gelu_mul; the
  // defaults refuse, naming the backend.
  virtual void scale(Tensor& x, float s);
  // out[n, j] = gelu(gate[n, j]) * up[n, j], with gelu's tanh approximation (Gemma's GeGLU)
  virtual void gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out);
  // out[r] = x[rows[r]]
  virtual void gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) = 0;

  // Rotates q [n, Hq*d] and k [n, Hkv*d] in place by their positions, then writes k and v into
  // the sequences' KV pages (and updates page statistics) for layer `layer`.
  virtual void rope_append_kv(int layer, Tensor& q, Tensor& k, const Tensor& v,
                              const RopeParams& rope, const StepPlan& plan, KvCache& cache) = 0;
  // For decoding sequences whose plan asks for it (refresh_selection, uses_selection), scores every
  // page from its key bounds against q and keeps the best pages in the sequence's selection slot.
  virtual void select_pages(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache) = 0;
  // out [n, Hq*d] = attention of q over each sequence's cached KV: retrieval heads causal (or the
  // selected pages when decoding sparsely), streaming heads sink + window.
  virtual void attention(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
                         Tensor& out) = 0;

  // --- sampling -------------------------------------------------------------------------
  // Samples row r of logits [rows, vocab] (f32; edited in place) by plan.sampling[r] and its
  // logit edits, following backend/sampling.h. Device backends queue the work and the copy of
  // the results to the host; sampled() waits for them (the step's only wait).
  virtual void sample(const Tensor& logits, const StepPlan& plan) = 0;
  // The results of the last sample(), one per row of its logits.
  virtual std::span<const SampledToken> sampled() = 0;
};

}  // namespace lserve
