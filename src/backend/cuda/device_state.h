// CudaBackend's state: the stream; the step tables at fixed device addresses (what recorded
// decode steps read on every replay); the staging ring through which host-planned work lists
// reach the device without waiting for it; the buffers of device-planned steps; the sampler's
// output. Included only by the backend's source files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
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

// A pinned host buffer and its device twin, reused once the device has passed `done`.
struct StagingSlot {
  void* host = nullptr;
  void* dev = nullptr;
  size_t capacity = 0;
  size_t used = 0;
  cudaEvent_t done = nullptr;
};

struct CudaBackend::Impl {
  explicit Impl(int device) : device_(device), holder_(std::make_shared<StreamHolder>(device)) {
    cudaDeviceProp prop{};
    LSERVE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    num_sms_ = prop.multiProcessorCount;
    smem_optin_ = static_cast<int>(prop.sharedMemPerBlockOptin);
    LSERVE_CUDA_CHECK(cuda::allow_attention_smem(static_cast<int>(prop.sharedMemPerBlockOptin)));
    // Freed blocks stay in the pool: per-step activations are reused, not returned to the driver.
    cudaMemPool_t pool;
    LSERVE_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    LSERVE_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    LSERVE_CUDA_CHECK(cuda::probe_wgmma(&hopper_, stream()));
    for (auto& s : ring_) {
      LSERVE_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
    }
    LSERVE_CUDA_CHECK(cudaEventCreate(&span_begin_));
    LSERVE_CUDA_CHECK(cudaEventCreate(&span_end_));
  }
  ~Impl() {
    cudaStreamSynchronize(stream());
    free_retired();
    for (auto& s : ring_) {
      if (s.host) cudaFreeHost(s.host);
      if (s.dev) cudaFree(s.dev);
      cudaEventDestroy(s.done);
    }
    cudaEventDestroy(span_begin_);
    cudaEventDestroy(span_end_);
    if (tables_host_) cudaFreeHost(tables_host_);
    if (tables_done_) cudaEventDestroy(tables_done_);
    if (sampled_host_) cudaFreeHost(sampled_host_);
  }

  cudaStream_t stream() const { return holder_->stream; }
  // The step's span ends after the copy of its sampled tokens (queued, not waited for).
  void end_span() {
    if (span_open_) LSERVE_CUDA_CHECK(cudaEventRecord(span_end_, stream()));
  }
  // After the stream was synchronised: adds the span to the totals.
  void account_span() {
    if (!span_open_) return;
    span_open_ = false;
    float ms = 0;
    LSERVE_CUDA_CHECK(cudaEventElapsedTime(&ms, span_begin_, span_end_));
    device_time_.seconds += ms * 1e-3;
    device_time_.steps = device_time_.steps < 0 ? 1 : device_time_.steps + 1;
  }
  Backend::DeviceTime device_time() const { return device_time_; }
  // The stream as the kernel launchers take it (programmatic dependent launch as the GEMMs use it).
  cuda::Stream launch_stream() const { return {holder_->stream, gemm_.pdl()}; }
  Tensor alloc_bytes(size_t bytes) {
    return alloc(DType::I32, 1, static_cast<int64_t>((bytes + 3) / 4));
  }
  int num_sms() const { return num_sms_; }
  // Device counters of dynamic prefill sparsity (blocks kept, causal blocks), made zero on first
  // use and summed over the backend's life.
  unsigned long long* prefill_totals() {
    if (prefill_totals_.empty()) {
      prefill_totals_ = alloc(DType::I32, 1, 4);
      LSERVE_CUDA_CHECK(cudaMemsetAsync(prefill_totals_.data, 0, 16, stream()));
    }
    return static_cast<unsigned long long*>(prefill_totals_.data);
  }
  bool has_prefill_totals() const { return !prefill_totals_.empty(); }
  const unsigned long long* prefill_totals() const {
    return static_cast<const unsigned long long*>(prefill_totals_.data);
  }
  int smem_optin() const { return smem_optin_; }
  bool hopper() const { return hopper_; }
  cuda::Gemm& gemm() { return gemm_; }
  // Changes whenever a buffer that recordings point at moves: older recordings are stale.
  uint64_t generation() const { return generation_; }

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

  // Copies host bytes into the current staging slot and returns their device address (valid
  // until the slot comes round again, two steps later). 256-byte aligned. Never used while a
  // step is being recorded: the recording would replay this step's bytes.
  template <typename T>
  const T* stage(const T* src, size_t bytes) {
    StagingSlot& s = ring_[slot_];
    size_t at = (s.used + 255) / 256 * 256;
    if (at + bytes > s.capacity) {
      grow_slot(s, at + bytes);
      at = 0;
    }
    std::memcpy(static_cast<char*>(s.host) + at, src, bytes);
    LSERVE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(s.dev) + at,
                                      static_cast<char*>(s.host) + at, bytes,
                                      cudaMemcpyHostToDevice, stream()));
    s.used = at + bytes;
    return reinterpret_cast<const T*>(static_cast<char*>(s.dev) + at);
  }
  template <typename T>
  const T* stage_vec(const std::vector<T>& v) {
    return v.empty() ? nullptr : stage(v.data(), v.size() * sizeof(T));
  }

  void begin_step(const StepPlan& plan, KvCache& cache) {
    // The current device is per host thread, and the server steps the engine on a thread other
    // than the one that built it.
    LSERVE_CUDA_CHECK(cudaSetDevice(device_));
    LSERVE_CUDA_CHECK(cudaEventRecord(span_begin_, stream()));
    span_open_ = true;
    // The slot this step takes was last used two steps ago; its copies have normally finished
    // long since, so this rarely waits.
    LSERVE_CUDA_CHECK(cudaEventRecord(ring_[slot_].done, stream()));
    slot_ = 1 - slot_;
    LSERVE_CUDA_CHECK(cudaEventSynchronize(ring_[slot_].done));
    ring_[slot_].used = 0;
    free_retired();
    staged_.clear();
    refresh_list_ = nullptr;
    plan_ = &plan;
    upload_tables(plan, cache);
    // Sized here, outside any recording (growing waits for the device).
    sampled_buffers(plan.rows());
    groups_.clear();
    groups_dev_ = nullptr;
    if (!plan.device_planned) {
      groups_ = plan_append(plan, cache.logical_page_size());
      groups_dev_ = stage_vec(groups_);
    } else {
      reserve_planned(plan, cache);
    }
  }

  const StepPlan& plan() const { return *plan_; }
  const cuda::DeviceStep& device_step() const { return step_; }
  // The step's sequence table as a layer with the model's sliding window `window` (Gemma 3) sees
  // it: stream_window is that window instead of the sparse config's. Its streaming heads are read
  // with sink 0 (AttnParams::sink), so the kernels' sink + window mask is exactly the model's.
  const cuda::SeqInfo* window_seqs(int32_t window) const {
    const auto it = std::find(windows_.begin(), windows_.end(), window);
    LSERVE_ASSERT(it != windows_.end());
    const auto i = static_cast<size_t>(it - windows_.begin());
    return reinterpret_cast<const cuda::SeqInfo*>(static_cast<const char*>(tables_dev_.data) +
                                                  off_.wseqs +
                                                  i * cap_.seqs * sizeof(cuda::SeqInfo));
  }
  const SampleRow* sample_rows() const { return sample_rows_; }
  const LogitEdit* logit_edits() const { return edits_; }

  // A layer signature's attention plan for the current (host-planned) step, uploaded once.
  struct StagedAttention {
    const cuda::AttnWork* decode = nullptr;
    const cuda::AttnWork* prefill = nullptr;
    const cuda::MergeItem* merges = nullptr;
    int n_decode = 0, n_prefill = 0, n_merges = 0;
    Tensor part_o, part_lse;  // split-KV partial results
    // Block-sparse prefill: the estimate items, their shares and kept lists ([n_mass,
    // max_blocks]) and list lengths, rewritten by every layer that uses this plan.
    // The estimate runs one CTA per row of mass_scratch (at most one per SM).
    const cuda::PrefillMassItem* mass_items = nullptr;
    int n_mass = 0, max_blocks = 0;
    bool sampled_rows = false;  // the estimate (AttentionPlan::prefill_estimate)
    Tensor mass, kept, kept_count, mass_scratch;
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
    if (!ap.prefill_mass.empty()) {
      sa.n_mass = static_cast<int>(ap.prefill_mass.size());
      sa.max_blocks = ap.prefill_max_blocks;
      sa.sampled_rows = ap.prefill_estimate == PrefillEstimate::kSampledRows;
      sa.mass_items = stage_vec(ap.prefill_mass);
      sa.mass = alloc(DType::F32, sa.n_mass, sa.max_blocks);
      sa.kept = alloc(DType::I32, sa.n_mass, sa.max_blocks);
      sa.kept_count = alloc(DType::I32, 1, sa.n_mass);
      sa.mass_scratch = alloc(DType::F32, std::min(sa.n_mass, num_sms_),
                              cuda::prefill_mass_scratch_floats(sa.max_blocks, sa.sampled_rows));
    }
    return staged_.emplace(signature, std::move(sa)).first->second;
  }
  // The sequences refreshing their page selection this step, uploaded once.
  const int32_t* staged_refresh_list(const std::vector<int32_t>& seqs) {
    if (!refresh_list_) refresh_list_ = stage_vec(seqs);
    return refresh_list_;
  }

  const std::vector<cuda::AppendGroup>& append_groups() const { return groups_; }
  const cuda::AppendGroup* append_groups_device() const { return groups_dev_; }

  // Buffers of device-planned steps (fixed while recordings use them).
  float* planned_part_o() const { return planned_part_o_.as<float>(); }
  float* planned_part_lse() const { return planned_part_lse_.as<float>(); }
  uint32_t* planned_scratch() const { return planned_scratch_.as<uint32_t>(); }
  int32_t planned_max_blocks() const { return planned_max_blocks_; }

  // Device and pinned host buffers of `rows` sampled tokens (fixed while recordings use them).
  std::pair<SampledToken*, SampledToken*> sampled_buffers(int rows) {
    if (rows > sampled_capacity_) {
      LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
      const int cap = std::max(rows, 2 * sampled_capacity_);
      if (sampled_host_) LSERVE_CUDA_CHECK(cudaFreeHost(sampled_host_));
      LSERVE_CUDA_CHECK(cudaMallocHost(&sampled_host_, cap * sizeof(SampledToken)));
      sampled_dev_ = alloc_bytes(cap * sizeof(SampledToken));
      sampled_capacity_ = cap;
      ++generation_;
    }
    return {sampled_dev_.as<SampledToken>(), static_cast<SampledToken*>(sampled_host_)};
  }
  const SampledToken* sampled_host() const {
    return static_cast<const SampledToken*>(sampled_host_);
  }

  // Device view of one layer of `cache`.
  cuda::LayerKv layer_kv(KvCache& cache, int layer) {
    const int hkv = cache.config().n_kv_heads;
    cuda::LayerKv kv{};
    auto ptr = [&](Tensor& t) { return t.empty() ? nullptr : t.data; };
    auto scale = [&](Tensor& t) { return t.empty() ? nullptr : t.as<float>(); };
    using HC = HeadClass;
    kv.fp8 = cache.storage_dtype() == DType::F8E4M3;
    LSERVE_ASSERT(kv.fp8 || cache.storage_dtype() == DType::BF16);
    kv.k_ret = ptr(cache.k(HC::kRetrieval, layer));
    kv.v_ret = ptr(cache.v(HC::kRetrieval, layer));
    kv.k_scale_ret = scale(cache.k_scale(HC::kRetrieval, layer));
    kv.v_scale_ret = scale(cache.v_scale(HC::kRetrieval, layer));
    kv.kmin = static_cast<cuda::bf16*>(ptr(cache.kmin(layer)));
    kv.kmax = static_cast<cuda::bf16*>(ptr(cache.kmax(layer)));
    kv.k_str = ptr(cache.k(HC::kStreaming, layer));
    kv.v_str = ptr(cache.v(HC::kStreaming, layer));
    kv.k_scale_str = scale(cache.k_scale(HC::kStreaming, layer));
    kv.v_scale_str = scale(cache.v_scale(HC::kStreaming, layer));
    kv.rows_ret = cache.k(HC::kRetrieval, layer).rows;
    kv.rows_str = cache.k(HC::kStreaming, layer).rows;
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
  // The step tables, laid out as on the device: sequences, the sequences once more per distinct
  // model sliding window (window_seqs), token ids, positions, sampling rows, logit edits, then
  // both page tables (retrieval pages, then streaming pages, in one array). Two copies:
  // everything before the edits' end, and the used part of the page tables.
  void upload_tables(const StepPlan& plan, KvCache& cache) {
    windows_.clear();
    for (int32_t w : cache.heads().window) {
      if (w > 0 && std::find(windows_.begin(), windows_.end(), w) == windows_.end()) {
        windows_.push_back(w);
      }
    }
    const size_t n_seqs = std::max<size_t>(plan.seqs.size(), plan.padded_rows);
    const size_t n_rows = static_cast<size_t>(plan.rows());
    const size_t n_sample = std::max(plan.sampling.size(), n_rows);
    const size_t n_idx = plan.page_indices.size() + plan.stream_indices.size();
    const size_t min_idx = static_cast<size_t>(cache.config().num_pages) +
                           static_cast<size_t>(cache.config().num_stream_pages) + 64;
    if (n_seqs > cap_.seqs || n_rows > cap_.tokens || n_sample > cap_.sample ||
        plan.logit_edits.size() > cap_.edits || n_idx > cap_.indices ||
        windows_.size() > cap_.windows) {
      TableCaps c;
      c.seqs = std::max<size_t>({n_seqs, 2 * cap_.seqs, 64});
      c.windows = std::max(windows_.size(), cap_.windows);
      c.tokens = std::max<size_t>({n_rows, 2 * cap_.tokens, 2048});
      c.sample = std::max<size_t>({n_sample, 2 * cap_.sample, 64});
      c.edits = std::max<size_t>({plan.logit_edits.size(), 2 * cap_.edits, 4096});
      c.indices = std::max<size_t>({n_idx, 2 * cap_.indices, min_idx});
      grow_tables(c);
    }
    // The previous step's copies out of the host buffer were queued before its kernels; the host
    // waits here only if the device has not yet started that step.
    LSERVE_CUDA_CHECK(cudaEventSynchronize(tables_done_));
    auto* h = static_cast<char*>(tables_host_);
    const auto* d = static_cast<const char*>(tables_dev_.data);
    // Sequences (padding slots: q_len 0, so device-planned kernels skip them).
    auto* seqs = reinterpret_cast<cuda::SeqInfo*>(h + off_.seqs);
    const auto n_pages = static_cast<int32_t>(plan.page_indices.size());
    for (size_t s = 0; s < n_seqs; ++s) {
      if (s < plan.seqs.size()) {
        seqs[s] = seq_info(plan, s);
        seqs[s].stream_base += n_pages;
      } else {
        seqs[s] = cuda::SeqInfo{};
        seqs[s].sel_slot = -1;
      }
    }
    for (size_t i = 0; i < windows_.size(); ++i) {
      auto* ws = reinterpret_cast<cuda::SeqInfo*>(h + off_.wseqs) + i * cap_.seqs;
      for (size_t s = 0; s < n_seqs; ++s) {
        ws[s] = seqs[s];
        ws[s].stream_window = windows_[i];
      }
    }
    // Token ids and positions; padding rows read token 0.
    auto* ids = reinterpret_cast<int32_t*>(h + off_.tokens);
    auto* pos = reinterpret_cast<int32_t*>(h + off_.positions);
    for (size_t i = 0; i < n_rows; ++i) {
      const bool real = i < plan.token_ids.size();
      ids[i] = real ? plan.token_ids[i] : 0;
      pos[i] = real ? plan.positions[i] : 0;
    }
    std::memcpy(h + off_.sample, plan.sampling.data(), plan.sampling.size() * sizeof(SampleRow));
    std::memcpy(h + off_.edits, plan.logit_edits.data(),
                plan.logit_edits.size() * sizeof(LogitEdit));
    auto* idx = reinterpret_cast<int32_t*>(h + off_.indices);
    std::copy(plan.page_indices.begin(), plan.page_indices.end(), idx);
    std::copy(plan.stream_indices.begin(), plan.stream_indices.end(), idx + n_pages);

    const size_t head = off_.edits + plan.logit_edits.size() * sizeof(LogitEdit);
    LSERVE_CUDA_CHECK(cudaMemcpyAsync(tables_dev_.data, h, head, cudaMemcpyHostToDevice, stream()));
    if (n_idx > 0) {
      LSERVE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(tables_dev_.data) + off_.indices,
                                        h + off_.indices, n_idx * sizeof(int32_t),
                                        cudaMemcpyHostToDevice, stream()));
    }
    LSERVE_CUDA_CHECK(cudaEventRecord(tables_done_, stream()));

    step_ = {};
    step_.seqs = reinterpret_cast<const cuda::SeqInfo*>(d + off_.seqs);
    step_.token_ids = reinterpret_cast<const int32_t*>(d + off_.tokens);
    step_.positions = reinterpret_cast<const int32_t*>(d + off_.positions);
    step_.page_indices = reinterpret_cast<const int32_t*>(d + off_.indices);
    step_.stream_indices = step_.page_indices;
    sample_rows_ = reinterpret_cast<const SampleRow*>(d + off_.sample);
    edits_ = reinterpret_cast<const LogitEdit*>(d + off_.edits);
  }

  struct TableCaps {
    size_t seqs = 0, tokens = 0, sample = 0, edits = 0, indices = 0, windows = 0;
  };
  struct TableOffsets {
    size_t seqs = 0, wseqs = 0, tokens = 0, positions = 0, sample = 0, edits = 0, indices = 0,
           end = 0;
  };

  void grow_tables(const TableCaps& c) {
    // Recordings point at the old tables: they go stale, and the device must be done with them.
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    auto align = [](size_t x) { return (x + 255) / 256 * 256; };
    TableOffsets o;
    o.seqs = 0;
    o.wseqs = align(o.seqs + c.seqs * sizeof(cuda::SeqInfo));
    o.tokens = align(o.wseqs + c.windows * c.seqs * sizeof(cuda::SeqInfo));
    o.positions = align(o.tokens + c.tokens * sizeof(int32_t));
    o.sample = align(o.positions + c.tokens * sizeof(int32_t));
    o.edits = align(o.sample + c.sample * sizeof(SampleRow));
    o.indices = align(o.edits + c.edits * sizeof(LogitEdit));
    o.end = align(o.indices + c.indices * sizeof(int32_t));
    if (tables_host_) LSERVE_CUDA_CHECK(cudaFreeHost(tables_host_));
    LSERVE_CUDA_CHECK(cudaMallocHost(&tables_host_, o.end));
    tables_dev_ = alloc_bytes(o.end);
    if (!tables_done_) {
      LSERVE_CUDA_CHECK(cudaEventCreateWithFlags(&tables_done_, cudaEventDisableTiming));
    }
    cap_ = c;
    off_ = o;
    ++generation_;
  }

  // Sizes the buffers a device-planned step's kernels use for the largest step seen so far.
  void reserve_planned(const StepPlan& plan, KvCache& cache) {
    const KvCacheConfig& kc = cache.config();
    const int rows = plan.padded_rows;
    AttentionPlanConfig cfg;
    cfg.n_heads = kc.n_heads;
    cfg.n_kv_heads = kc.n_kv_heads;
    cfg.num_sms = num_sms_;
    cfg.decode_key_tile = cuda::decode_key_tile(cache.storage_dtype() == DType::F8E4M3);
    const cuda::DecodeGrid g = decode_grid(rows, cache.sparse(), cfg);
    const int64_t partials =
        static_cast<int64_t>(rows) * g.n_kv_heads * g.units_per_head * g.splits;
    const int64_t blocks = std::max(1, kc.num_pages);
    const int64_t scratch = static_cast<int64_t>(rows) * cache.sel_heads() * blocks;
    if (partials <= planned_partials_ && scratch <= planned_scratch_.numel()) return;
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(stream()));
    if (partials > planned_partials_) {
      planned_part_o_ = alloc(DType::F32, partials * 16, kc.head_dim);
      planned_part_lse_ = alloc(DType::F32, partials, 16);
      planned_partials_ = partials;
    }
    if (scratch > planned_scratch_.numel()) planned_scratch_ = alloc(DType::I32, 1, scratch);
    planned_max_blocks_ = static_cast<int32_t>(blocks);
    ++generation_;
  }

  // A larger slot; the old buffers stay alive (queued copies and kernels may still use them)
  // until the slot is next reused.
  void grow_slot(StagingSlot& s, size_t need) {
    if (s.host) retired_.push_back({s.host, s.dev});
    const size_t cap = std::max<size_t>(need * 2, 4u << 20);
    LSERVE_CUDA_CHECK(cudaMallocHost(&s.host, cap));
    LSERVE_CUDA_CHECK(cudaMalloc(&s.dev, cap));
    s.capacity = cap;
    s.used = 0;
  }

  // Retired staging buffers are freed once both slots have come round, i.e. the device has
  // passed every step that could still read them.
  void free_retired() {
    if (retired_.empty()) return;
    LSERVE_CUDA_CHECK(cudaEventSynchronize(ring_[1 - slot_].done));
    for (auto& [h, d] : retired_) {
      cudaFreeHost(h);
      cudaFree(d);
    }
    retired_.clear();
  }

 private:
  int device_;
  std::shared_ptr<StreamHolder> holder_;
  int num_sms_ = 0;
  int smem_optin_ = 0;  // shared memory a block may opt in to
  Tensor prefill_totals_;
  bool hopper_ = false;  // this build's sm_90a code (wgmma) runs on the device
  uint64_t generation_ = 0;
  cuda::Gemm gemm_;
  StagingSlot ring_[2];
  int slot_ = 0;
  std::vector<std::pair<void*, void*>> retired_;
  void* tables_host_ = nullptr;  // pinned
  Tensor tables_dev_;
  cudaEvent_t tables_done_ = nullptr;
  cudaEvent_t span_begin_ = nullptr, span_end_ = nullptr;  // timing events of the open step
  bool span_open_ = false;
  Backend::DeviceTime device_time_;
  TableCaps cap_;
  TableOffsets off_;
  const StepPlan* plan_ = nullptr;
  std::vector<int32_t> windows_;  // the cache's distinct model sliding windows (window_seqs)
  cuda::DeviceStep step_{};
  const SampleRow* sample_rows_ = nullptr;
  const LogitEdit* edits_ = nullptr;
  std::map<std::vector<int8_t>, StagedAttention> staged_;
  const int32_t* refresh_list_ = nullptr;
  std::vector<cuda::AppendGroup> groups_;
  const cuda::AppendGroup* groups_dev_ = nullptr;
  Tensor planned_part_o_, planned_part_lse_, planned_scratch_;
  int64_t planned_partials_ = 0;
  int32_t planned_max_blocks_ = 0;
  void* sampled_host_ = nullptr;  // pinned
  Tensor sampled_dev_;
  int sampled_capacity_ = 0;
  std::map<std::tuple<float, const float*, int>, Tensor> inv_freq_;
};

}  // namespace lserve
