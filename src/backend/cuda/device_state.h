// CudaBackend's state: the stream, stream-ordered allocations, the staging area through which
// each step's host-planned tables reach the device, and per-cache device tables. Included only by
// the backend's .cu file.
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/attention_plan.h"
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/kernels/params.h"
#include "backend/cuda/launch.h"
#include "kv/kv_cache.h"

namespace lserve {

// Owns the stream; allocations keep it alive (their deleters free on it).
struct StreamHolder {
  cudaStream_t stream = nullptr;
  explicit StreamHolder(int device) {
    LSERVE_CUDA_CHECK(cudaSetDevice(device));
    LSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~StreamHolder() { cudaStreamDestroy(stream); }
};

struct CudaBackend::Impl {
  explicit Impl(int device) : device_(device), holder_(std::make_shared<StreamHolder>(device)) {
    cudaDeviceProp prop{};
    LSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    num_sms_ = prop.multiProcessorCount;
    LSERVE_CUDA_CHECK(cuda::allow_attention_smem(static_cast<int>(prop.sharedMemPerBlockOptin)));
    // Freed blocks stay in the pool: per-step activations are reused, not returned to the driver.
    cudaMemPool_t pool;
    LSERVE_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    LSERVE_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    LSERVE_CUDA_CHECK(cuda::probe_wgmma(&hopper_, stream()));
  }
  ~Impl() {
    cudaStreamSynchronize(stream());
    free_retired();
    if (host_stage_) cudaFreeHost(host_stage_);
    if (dev_stage_) cudaFree(dev_stage_);
  }

  cudaStream_t stream() const { return holder_->stream; }
  int num_sms() const { return num_sms_; }
  bool hopper() const { return hopper_; }
  cuda::Gemm& gemm() { return gemm_; }

  Tensor alloc(DType dtype, int64_t rows, int64_t cols) {
    Tensor t;
    t.dtype = dtype;
    t.rows = rows;
    t.cols = cols;
    const size_t bytes = std::max<size_t>(256, t.nbytes());
    void* p = nullptr;
    const cudaError_t err = cudaMallocAsync(&p, bytes, stream());
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw OutOfMemoryError(fmt::format("GPU out of memory allocating {} MiB: {}", bytes >> 20,
                                         cudaGetErrorString(err)));
    }
    auto holder = holder_;
    t.owner = std::shared_ptr<void>(p, [holder](void* q) { cudaFreeAsync(q, holder->stream); });
    t.data = p;
    return t;
  }

  // Copies host bytes into the step's staging area and returns their device address (valid until
  // the next begin_step). 256-byte aligned.
  template <typename T>
  const T* stage(const T* src, size_t bytes) {
    size_t at = (stage_used_ + 255) / 256 * 256;
    if (at + bytes > stage_capacity_) {
      grow_stage(at + bytes);
      at = 0;
    }
    std::memcpy(static_cast<char*>(host_stage_) + at, src, bytes);
    LSERVE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dev_stage_) + at,
                                      static_cast<char*>(host_stage_) + at, bytes,
                                      cudaMemcpyHostToDevice, stream()));
    stage_used_ = at + bytes;
    return reinterpret_cast<const T*>(static_cast<char*>(dev_stage_) + at);
  }

  void begin_step(const StepPlan& plan, KvCache& cache) {
    // The current device is per host thread, and the server steps the engine on a thread other
    // than the one that built it.
    LSERVE_CUDA_CHECK(cudaSetDevice(device_));
    // The previous step's copies out of the staging area have finished once the stream is idle.
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    free_retired();
    staged_.clear();
    refresh_list_ = nullptr;
    stage_used_ = 0;
    std::vector<cuda::SeqInfo> seqs(plan.seqs.size());
    for (size_t s = 0; s < plan.seqs.size(); ++s) {
      const SeqStep& q = plan.seqs[s];
      cuda::SeqInfo& d = seqs[s];
      d.q_offset = q.q_offset;
      d.q_len = q.q_len;
      d.start_pos = q.start_pos;
      d.stream_window = q.stream_window;
      d.stream_sink_blocks = q.stream_sink_blocks;
      d.stream_window_first = q.stream_window_first;
      d.token_budget = q.token_budget;
      d.sel_slot = q.sel_slot;
      d.page_base = plan.page_indptr.empty() ? 0 : plan.page_indptr[s];
      d.stream_base = plan.stream_indptr.empty() ? 0 : plan.stream_indptr[s];
      d.n_stream =
          plan.stream_indptr.empty() ? 0 : plan.stream_indptr[s + 1] - plan.stream_indptr[s];
    }
    step_ = {};
    step_.n_tokens = plan.n_tokens();
    step_.n_seqs = static_cast<int32_t>(seqs.size());
    step_.seqs = stage(seqs.data(), seqs.size() * sizeof(cuda::SeqInfo));
    step_.token_ids = stage_vec(plan.token_ids);
    step_.positions = stage_vec(plan.positions);
    step_.page_indices = stage_vec(plan.page_indices);
    step_.stream_indices = stage_vec(plan.stream_indices);
    groups_ = plan_append(plan, cache.logical_page_size());
    groups_dev_ = groups_.empty()
                      ? nullptr
                      : stage(groups_.data(), groups_.size() * sizeof(cuda::AppendGroup));
  }

  // A layer signature's attention plan for the current step, uploaded once.
  struct StagedAttention {
    const cuda::AttnWork* decode = nullptr;
    const cuda::AttnWork* prefill = nullptr;
    const cuda::MergeItem* merges = nullptr;
    int n_decode = 0, n_prefill = 0, n_merges = 0;
    Tensor part_o, part_lse;  // split-KV partial results
  };
  template <typename PlanFn>
  const StagedAttention& staged_attention(const std::vector<int8_t>& signature, int head_dim,
                                          PlanFn make_plan) {
    auto it = staged_.find(signature);
    if (it != staged_.end()) return it->second;
    const AttentionPlan ap = make_plan();
    StagedAttention sa;
    sa.n_decode = static_cast<int>(ap.decode.size());
    sa.n_prefill = static_cast<int>(ap.prefill.size());
    sa.n_merges = static_cast<int>(ap.merges.size());
    sa.decode = stage_vec(ap.decode);
    sa.prefill = stage_vec(ap.prefill);
    sa.merges = stage_vec(ap.merges);
    if (ap.n_partials > 0) {
      sa.part_o = alloc(DType::F32, static_cast<int64_t>(ap.n_partials) * 16, head_dim);
      sa.part_lse = alloc(DType::F32, ap.n_partials, 16);
    }
    return staged_.emplace(signature, std::move(sa)).first->second;
  }
  // The sequences refreshing their page selection this step, uploaded once.
  const int32_t* staged_refresh_list(const std::vector<int32_t>& seqs) {
    if (!refresh_list_) refresh_list_ = stage_vec(seqs);
    return refresh_list_;
  }

  const cuda::DeviceStep& device_step() const { return step_; }

  template <typename T>
  const T* stage_vec(const std::vector<T>& v) {
    return v.empty() ? nullptr : stage(v.data(), v.size() * sizeof(T));
  }
  const std::vector<cuda::AppendGroup>& append_groups() const { return groups_; }
  const cuda::AppendGroup* append_groups_device() const { return groups_dev_; }

  // Device view of one layer of `cache`.
  cuda::LayerKv<cuda::bf16> layer_kv(KvCache& cache, int layer) {
    const int hkv = cache.config().n_kv_heads;
    cuda::LayerKv<cuda::bf16> kv{};
    auto ptr = [&](Tensor& t) { return t.empty() ? nullptr : t.as<cuda::bf16>(); };
    kv.k_ret = ptr(cache.k(HeadClass::kRetrieval, layer));
    kv.v_ret = ptr(cache.v(HeadClass::kRetrieval, layer));
    kv.kmin = ptr(cache.kmin(layer));
    kv.kmax = ptr(cache.kmax(layer));
    kv.k_str = ptr(cache.k(HeadClass::kStreaming, layer));
    kv.v_str = ptr(cache.v(HeadClass::kStreaming, layer));
    kv.n_ret = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
    kv.n_str = cache.layout(HeadClass::kStreaming).heads_per_layer[layer];
    kv.head_class = cache.head_class_table().as<int32_t>() + layer * hkv;
    kv.head_slot = cache.head_slot_table().as<int32_t>() + layer * hkv;
    kv.page_size = cache.page_size();
    kv.logical_page_size = cache.logical_page_size();
    kv.head_dim = cache.config().head_dim;
    return kv;
  }

  // RoPE inverse frequencies on the device, computed once per parameter set.
  const float* inv_freq(const RopeParams& rope, int head_dim) {
    const auto key = std::make_tuple(rope.theta, rope.freq_factors, head_dim);
    auto it = inv_freq_.find(key);
    if (it == inv_freq_.end()) {
      const std::vector<float> inv = rope_inverse_frequencies(rope, head_dim);
      Tensor t = alloc(DType::F32, 1, head_dim / 2);
      LSERVE_CUDA_CHECK(
          cudaMemcpyAsync(t.data, inv.data(), inv.size() * 4, cudaMemcpyHostToDevice, stream()));
      LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
      it = inv_freq_.emplace(key, std::move(t)).first;
    }
    return it->second.as<float>();
  }

 private:
  // A larger staging area; the old one stays alive (queued copies and kernels may still use it)
  // until the next begin_step, so pointers handed out earlier in this step stay valid.
  void grow_stage(size_t need) {
    if (host_stage_) retired_.push_back({host_stage_, dev_stage_});
    const size_t cap = std::max<size_t>(need * 2, 4u << 20);
    LSERVE_CUDA_CHECK(cudaMallocHost(&host_stage_, cap));
    LSERVE_CUDA_CHECK(cudaMalloc(&dev_stage_, cap));
    stage_capacity_ = cap;
    stage_used_ = 0;
  }

  void free_retired() {
    for (auto& [h, d] : retired_) {
      cudaFreeHost(h);
      cudaFree(d);
    }
    retired_.clear();
  }

  int device_;
  std::shared_ptr<StreamHolder> holder_;
  int num_sms_ = 0;
  bool hopper_ = false;  // this build's sm_90a code (wgmma) runs on the device
  cuda::Gemm gemm_;
  void* host_stage_ = nullptr;  // pinned
  void* dev_stage_ = nullptr;
  size_t stage_capacity_ = 0;
  size_t stage_used_ = 0;
  std::vector<std::pair<void*, void*>> retired_;
  std::map<std::vector<int8_t>, StagedAttention> staged_;
  const int32_t* refresh_list_ = nullptr;
  cuda::DeviceStep step_{};
  std::vector<cuda::AppendGroup> groups_;
  const cuda::AppendGroup* groups_dev_ = nullptr;
  std::map<std::tuple<float, const float*, int>, Tensor> inv_freq_;
};

}  // namespace lserve
