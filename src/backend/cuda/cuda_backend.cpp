#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "backend/attention_plan.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_state.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/sampling_launch.h"
#include "core/dtype.h"
#include "kv/kv_cache.h"

namespace lserve {

using cuda::bf16;

namespace {

void check_bf16(const Tensor& t) { LSERVE_ASSERT(t.dtype == DType::BF16 && t.data != nullptr); }

// A recorded step: a CUDA graph replayed on the backend's stream while the buffers it points at
// stay where they were when it was recorded.
class CudaRecording final : public StepRecording {
 public:
  CudaRecording(cudaGraphExec_t exec, const CudaBackend::Impl& impl)
      : exec_(exec), impl_(impl), generation_(impl.generation()) {}
  ~CudaRecording() override { cudaGraphExecDestroy(exec_); }
  bool replay() override {
    if (impl_.generation() != generation_) return false;
    LSERVE_CUDA_CHECK(cudaGraphLaunch(exec_, impl_.stream()));
    return true;
  }

 private:
  cudaGraphExec_t exec_;
  const CudaBackend::Impl& impl_;
  uint64_t generation_;
};

}  // namespace

bool cuda_device_available(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess || n == 0) {
    if (why) *why = err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device";
    cudaGetLastError();
    return false;
  }
  return true;
}

CudaBackend::CudaBackend(int device) : impl_(std::make_unique<Impl>(device)) {}
CudaBackend::~CudaBackend() = default;

Tensor CudaBackend::alloc(DType dtype, int64_t rows, int64_t cols) {
  return impl_->alloc(dtype, rows, cols);
}

Tensor CudaBackend::upload(const float* host, int64_t rows, int64_t cols) {
  Tensor t = alloc(DType::BF16, rows, cols);
  std::vector<uint16_t> tmp(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < tmp.size(); ++i) tmp[i] = f32_to_bf16(host[i]);
  LSERVE_CUDA_CHECK(
      cudaMemcpyAsync(t.data, tmp.data(), t.nbytes(), cudaMemcpyHostToDevice, impl_->stream()));
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
  return t;
}

Tensor CudaBackend::random(int64_t rows, int64_t cols, uint64_t seed, float scale) {
  Tensor t = alloc(DType::BF16, rows, cols);
  LSERVE_CUDA_CHECK(cuda::launch_random(t.as<bf16>(), t.numel(), seed, scale, impl_->stream()));
  return t;
}

void CudaBackend::fill(Tensor& t, float value) {
  const cudaStream_t st = impl_->stream();
  if (t.dtype == DType::BF16) {
    LSERVE_CUDA_CHECK(cuda::launch_fill(t.as<bf16>(), value, t.numel(), st));
  } else if (t.dtype == DType::F32) {
    LSERVE_CUDA_CHECK(cuda::launch_fill(t.as<float>(), value, t.numel(), st));
  } else {
    fail("fill: unsupported dtype {}", dtype_name(t.dtype));
  }
}

void CudaBackend::fill_random(Tensor& t, uint64_t seed, float scale) {
  if (t.dtype == DType::F8E4M3) {
    // Elements over E4M3's whole range: what they mean is set by the row scales beside them.
    LSERVE_CUDA_CHECK(
        cuda::launch_random_e4m3(static_cast<uint8_t*>(t.data), t.numel(), seed, impl_->stream()));
    return;
  }
  LSERVE_CHECK(t.dtype == DType::BF16, "fill_random: unsupported dtype {}", dtype_name(t.dtype));
  LSERVE_CUDA_CHECK(cuda::launch_random(t.as<bf16>(), t.numel(), seed, scale, impl_->stream()));
}

void CudaBackend::to_host(const Tensor& t, float* host) {
  const size_t n = static_cast<size_t>(t.numel());
  if (t.dtype == DType::F32) {
    LSERVE_CUDA_CHECK(
        cudaMemcpyAsync(host, t.data, t.nbytes(), cudaMemcpyDeviceToHost, impl_->stream()));
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
    return;
  }
  std::vector<uint8_t> tmp(t.nbytes());
  LSERVE_CUDA_CHECK(
      cudaMemcpyAsync(tmp.data(), t.data, t.nbytes(), cudaMemcpyDeviceToHost, impl_->stream()));
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
  for (size_t i = 0; i < n; ++i) {
    if (t.dtype == DType::BF16) {
      uint16_t h;
      std::memcpy(&h, tmp.data() + 2 * i, 2);
      host[i] = bf16_to_f32(h);
    } else if (t.dtype == DType::I32) {
      int32_t v;
      std::memcpy(&v, tmp.data() + 4 * i, 4);
      host[i] = static_cast<float>(v);
    } else {
      uint16_t h;
      std::memcpy(&h, tmp.data() + 2 * i, 2);
      host[i] = f16_to_f32(h);
    }
  }
}

int64_t CudaBackend::free_memory_bytes() const {
  size_t free_bytes = 0, total = 0;
  LSERVE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return static_cast<int64_t>(free_bytes);
}

int64_t CudaBackend::total_memory_bytes() const {
  size_t free_bytes = 0, total = 0;
  LSERVE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  return static_cast<int64_t>(total);
}

void CudaBackend::write(Tensor& t, const void* host_bytes) {
  LSERVE_CUDA_CHECK(
      cudaMemcpyAsync(t.data, host_bytes, t.nbytes(), cudaMemcpyHostToDevice, impl_->stream()));
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
}

void* CudaBackend::stream_handle() const { return impl_->stream(); }

Backend::DeviceTime CudaBackend::device_time() const { return impl_->device_time(); }

void CudaBackend::synchronize() { LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream())); }

void CudaBackend::begin_step(const StepPlan& plan, KvCache& cache) {
  impl_->begin_step(plan, cache);
  device_planned_ = plan.device_planned;
}

bool CudaBackend::can_record() const { return true; }

Backend::PrefillBlockStats CudaBackend::prefill_block_stats() const {
  unsigned long long totals[2] = {0, 0};
  if (impl_->has_prefill_totals()) {
    LSERVE_CUDA_CHECK(cudaMemcpyAsync(totals, impl_->prefill_totals(), sizeof(totals),
                                      cudaMemcpyDeviceToHost, impl_->stream()));
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
  }
  return {static_cast<int64_t>(totals[0]), static_cast<int64_t>(totals[1])};
}

bool CudaBackend::supports_prefill_sparsity(KvDtype t, int head_dim, PrefillEstimate e) const {
  // The estimate keeps a pass's query rows (up to 1,024 x head_dim bytes) and its key stages in
  // shared memory.
  return t != KvDtype::kFp8 && (head_dim == 64 || head_dim == 128) &&
         cuda::prefill_mass_smem_bytes(head_dim, impl_->hopper(),
                                       e == PrefillEstimate::kSampledRows) <= impl_->smem_optin();
}

std::string CudaBackend::prefill_sparsity_supported() const {
  const auto kib = [&](int d, bool sampled) {
    return cuda::prefill_mass_smem_bytes(d, impl_->hopper(), sampled) / 1024;
  };
  return fmt::format(
      "with bf16 KV (not --kv-cache-dtype fp8), head_dim 64 or 128, and the estimate's shared "
      "memory within this GPU's {} KB per block (antidiagonal {} / {} KB at head_dim 64 / 128, "
      "--prefill-estimate sampled-rows {} / {} KB)",
      impl_->smem_optin() / 1024, kib(64, false), kib(128, false), kib(64, true), kib(128, true));
}

std::unique_ptr<StepRecording> CudaBackend::record(const std::function<void()>& work) {
  LSERVE_ASSERT(device_planned_);
  const cudaStream_t st = impl_->stream();
  // Thread-local mode: other threads' CUDA calls (e.g. a server's) are not part of the capture.
  LSERVE_CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    work();
  } catch (...) {
    cudaStreamEndCapture(st, &graph);
    if (graph) cudaGraphDestroy(graph);
    throw;
  }
  LSERVE_CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  LSERVE_CUDA_CHECK(err);
  return std::make_unique<CudaRecording>(exec, *impl_);
}

void CudaBackend::embed(const Tensor& table, std::span<const int32_t> ids, Tensor& out) {
  check_bf16(table);
  if (ids.empty()) return;
  for (int32_t id : ids) {
    LSERVE_CHECK(id >= 0 && id < table.rows, "token id {} is outside the vocabulary ({})", id,
                 table.rows);
  }
  // A device-planned step's ids are already on the device, in its tables (padding rows: 0).
  const int32_t* dids =
      device_planned_ ? impl_->device_step().token_ids : impl_->stage(ids.data(), ids.size_bytes());
  const int64_t n = device_planned_ ? out.rows : static_cast<int64_t>(ids.size());
  LSERVE_CUDA_CHECK(cuda::launch_gather_rows(table.as<bf16>(), dids, n, table.cols, out.as<bf16>(),
                                             impl_->launch_stream()));
}

void CudaBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  LSERVE_ASSERT(!device_planned_);
  if (rows.empty()) return;
  const int32_t* drows = impl_->stage(rows.data(), rows.size_bytes());
  LSERVE_CUDA_CHECK(cuda::launch_gather_rows(x.as<bf16>(), drows, static_cast<int64_t>(rows.size()),
                                             x.cols, out.as<bf16>(), impl_->launch_stream()));
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  LSERVE_ASSERT(x.cols == w.cols && out.rows == x.rows && out.cols == x.cols);
  if (x.rows == 0) return;
  LSERVE_CUDA_CHECK(cuda::launch_rms_norm(x.as<bf16>(), w.as<bf16>(), eps, x.rows, x.cols,
                                          out.as<bf16>(), impl_->launch_stream()));
}

void CudaBackend::matmul(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) {
  LSERVE_ASSERT(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows);
  check_bf16(x);
  check_bf16(w);
  LSERVE_ASSERT(out.dtype == DType::BF16 || out.dtype == DType::F32);
  if (x.rows == 0) return;
  impl_->gemm().run(x.data, w.data, out.data, out.dtype == DType::F32, accumulate, x.rows, w.rows,
                    x.cols, impl_->stream());
}

void CudaBackend::matmul_many(const Tensor& x, std::span<const Tensor* const> ws,
                              std::span<Tensor* const> outs) {
  LSERVE_ASSERT(ws.size() == outs.size() && !ws.empty());
  check_bf16(x);
  if (x.rows == 0) return;
  std::vector<cuda::GemvTarget> targets;
  for (size_t j = 0; j < ws.size(); ++j) {
    const Tensor& w = *ws[j];
    Tensor& out = *outs[j];
    LSERVE_ASSERT(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows &&
                  out.dtype == DType::BF16);
    check_bf16(w);
    targets.push_back({w.data, w.rows, out.data, out.cols});
  }
  impl_->gemm().run_many(x.data, x.rows, x.cols, targets, /*out_f32=*/false, /*accumulate=*/false,
                         impl_->stream());
}

void CudaBackend::add_bias(Tensor& x, const Tensor& bias) {
  LSERVE_ASSERT(bias.numel() == x.cols);
  LSERVE_CUDA_CHECK(cuda::launch_add_bias(x.as<bf16>(), bias.as<bf16>(), x.numel(), x.cols,
                                          impl_->launch_stream()));
}

void CudaBackend::add(Tensor& x, const Tensor& y) {
  LSERVE_ASSERT(x.numel() == y.numel());
  LSERVE_CUDA_CHECK(
      cuda::launch_add(x.as<bf16>(), y.as<bf16>(), x.numel(), impl_->launch_stream()));
}

void CudaBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  LSERVE_ASSERT(gate.numel() == up.numel() && out.numel() == gate.numel());
  LSERVE_CUDA_CHECK(cuda::launch_silu_mul(gate.as<bf16>(), up.as<bf16>(), out.as<bf16>(),
                                          gate.numel(), impl_->launch_stream()));
}

void CudaBackend::scale(Tensor& x, float s) {
  check_bf16(x);
  if (x.numel() == 0) return;
  LSERVE_CUDA_CHECK(cuda::launch_scale(x.as<bf16>(), s, x.numel(), impl_->launch_stream()));
}

void CudaBackend::gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  LSERVE_ASSERT(gate.numel() == up.numel() && out.numel() == gate.numel());
  if (gate.numel() == 0) return;
  LSERVE_CUDA_CHECK(cuda::launch_gelu_mul(gate.as<bf16>(), up.as<bf16>(), out.as<bf16>(),
                                          gate.numel(), impl_->launch_stream()));
}

void CudaBackend::rope_append_kv(int layer, Tensor& q, Tensor& k, const Tensor& v,
                                 const RopeParams& rope, const StepPlan& plan, KvCache& cache) {
  // A device-planned step: one CTA row per sequence slot, each appending its one token.
  const auto& groups = impl_->append_groups();
  const int n_groups = device_planned_ ? plan.padded_rows : static_cast<int>(groups.size());
  if (n_groups == 0) return;
  cuda::RopeAppendParams p{};
  p.step = impl_->device_step();
  p.groups = device_planned_ ? nullptr : impl_->append_groups_device();
  p.q = q.as<bf16>();
  p.k = k.as<bf16>();
  p.v = v.as<bf16>();
  p.n_heads = static_cast<int32_t>(q.cols / cache.config().head_dim);
  p.n_kv_heads = cache.config().n_kv_heads;
  p.inv_freq = impl_->inv_freq(rope, cache.config().head_dim);
  p.half_split = rope.half_split ? 1 : 0;
  p.attention_factor = rope.attention_factor;
  p.kv = impl_->layer_kv(cache, layer);
  LSERVE_CUDA_CHECK(cuda::launch_rope_append(p, n_groups, impl_->launch_stream()));
}

void CudaBackend::select_pages(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache) {
  const SparseAttentionConfig& sp = cache.sparse();
  LSERVE_CHECK(sp.selector_drift == 0,
               "--selector-drift is implemented on the CPU backend only so far (not on CUDA)");
  // A layer of streaming heads only (a model's sliding-window layer) selects nothing.
  if (cache.heads().count(layer, HeadClass::kRetrieval) == 0) return;
  const int sel_heads = cache.sel_heads();
  std::vector<int32_t> seqs;
  int32_t max_blocks = 1;
  int n_rows = 0;
  if (device_planned_) {
    // The same launch for every step of this recording: every slot, each CTA checking its own
    // sequence's refresh flag. Steps that refresh nothing are recorded without it.
    const bool any = std::any_of(plan.seqs.begin(), plan.seqs.end(),
                                 [](const SeqStep& s) { return s.refresh_selection; });
    if (!any || layer < sp.selector_skip_layers) return;
    n_rows = plan.padded_rows;
    max_blocks = impl_->planned_max_blocks();
  } else {
    for (size_t s = 0; s < plan.seqs.size(); ++s) {
      const SeqStep& st = plan.seqs[s];
      if (!st.refresh_selection || !st.uses_selection(layer, sp.selector_skip_layers)) continue;
      seqs.push_back(static_cast<int32_t>(s));
      max_blocks = std::max(max_blocks, (st.end_pos() + sp.page_size - 1) / sp.page_size);
    }
    if (seqs.empty()) return;
    n_rows = static_cast<int>(seqs.size());
  }
  const int d = cache.config().head_dim;
  LSERVE_CHECK(d == 64 || d == 128 || d == 256,
               "the page selector supports head_dim 64, 128 and 256, not {}", d);
  cuda::SelectorParams p{};
  p.step = impl_->device_step();
  p.seq_list = device_planned_ ? nullptr : impl_->staged_refresh_list(seqs);
  p.q = q.as<bf16>();
  p.n_heads = cache.config().n_heads;
  p.n_kv_heads = cache.config().n_kv_heads;
  LSERVE_CHECK(p.n_heads / p.n_kv_heads <= cuda::kSelectorMaxGroup, "group size above {}",
               cuda::kSelectorMaxGroup);
  p.per_query_head = sp.granularity == SelectorGranularity::kQueryHead ? 1 : 0;
  p.budget_cap = sp.token_budget;
  p.layer = layer;
  p.n_layers = cache.config().n_layers;
  p.skip_layers = sp.selector_skip_layers;
  p.kv = impl_->layer_kv(cache, layer);
  p.max_blocks = max_blocks;
  // Scoring warps for about one wave of two resident CTAs per multiprocessor: one page per warp
  // at a short context; more at long ones and large batches, where the next page's loads overlap
  // the current one's math. Streaming heads score nothing.
  constexpr int kWarps = cuda::kSelectorThreads / 32;
  const int64_t wave_warps = static_cast<int64_t>(impl_->num_sms()) * 2 * kWarps;
  int chunks = 0;
  Tensor scratch;
  if (device_planned_) {
    // Pages per warp are sized by each CTA from its own sequence's length; the grid covers the
    // longest sequence the pool can hold (at most kScoreMaxPagesPerWarp pages per warp) and at
    // least one wave.
    p.pages_per_warp = 0;
    p.scratch = impl_->planned_scratch();
    const int64_t per_cta = int64_t{kWarps} * cuda::kScoreMaxPagesPerWarp;
    const int64_t ctas_per_row = static_cast<int64_t>(n_rows) * sel_heads;
    chunks = static_cast<int>(
        std::max<int64_t>((max_blocks + per_cta - 1) / per_cta,
                          (2 * impl_->num_sms() + ctas_per_row - 1) / ctas_per_row));
  } else {
    scratch = alloc(DType::I32, static_cast<int64_t>(n_rows) * sel_heads, max_blocks);
    p.scratch = scratch.as<uint32_t>();
    const int64_t scored_heads = static_cast<int64_t>(sel_heads) *
                                 cache.heads().count(layer, HeadClass::kRetrieval) /
                                 cache.config().n_kv_heads;
    const int64_t pages = static_cast<int64_t>(n_rows) * scored_heads * max_blocks;
    p.pages_per_warp = static_cast<int32_t>(
        std::clamp<int64_t>((pages + wave_warps - 1) / wave_warps, 1, cuda::kScoreMaxPagesPerWarp));
    const int per_cta = kWarps * p.pages_per_warp;
    chunks = (max_blocks + per_cta - 1) / per_cta;
  }
  p.sel_blocks = cache.sel_blocks().as<int32_t>();
  p.sel_count = cache.sel_count().as<int32_t>();
  p.max_sel = cache.max_sel_pages();
  LSERVE_CUDA_CHECK(
      cuda::launch_select_pages(p, n_rows, sel_heads, chunks, d, impl_->launch_stream()));
}

void CudaBackend::attention(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
                            Tensor& out) {
  const int d = cache.config().head_dim;
  LSERVE_CHECK(d == 64 || d == 128 || d == 256,
               "the CUDA attention kernels support head_dim 64, 128 and 256, not {}", d);
  // The fast kernels (attention.cuh: mma.sync and wgmma tiles) cover head_dim 64 and 128. Head
  // dim 256 (Gemma 3) runs the reference kernel (attention_reference.cuh: a warp per query row,
  // f32), whatever attn_kernels_ asks for, with smaller prefill tiles (more CTAs) and its own
  // split-KV merge.
  const bool reference = attn_kernels_ == AttnKernels::kReference || d == 256;
  AttentionPlanConfig cfg;
  cfg.layer = layer;
  cfg.n_heads = static_cast<int>(q.cols / d);
  cfg.n_kv_heads = cache.config().n_kv_heads;
  cfg.num_sms = impl_->num_sms();
  cfg.min_split_keys = min_split_keys_;
  cfg.prefill_rows = d == 256 ? cuda::kReferencePrefillRows : cuda::kPrefillRows;
  cfg.decode_rows = cuda::kDecodeRows;
  cfg.decode_key_tile = cuda::decode_key_tile(cache.storage_dtype() == DType::F8E4M3);

  cuda::AttnParams p{};
  p.step = impl_->device_step();
  p.q = q.as<bf16>();
  p.out = out.as<bf16>();
  p.n_heads = static_cast<int32_t>(q.cols / d);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d)));
  p.sink = cache.sparse().sink_tokens;
  p.kv = impl_->layer_kv(cache, layer);
  p.sel_heads = cache.sel_heads();
  p.max_sel = cache.max_sel_pages();
  p.layer = layer;
  p.n_layers = cache.config().n_layers;
  p.per_query_head = cache.sparse().granularity == SelectorGranularity::kQueryHead ? 1 : 0;
  if (cache.config().num_sel_slots > 0) {
    p.sel_blocks = cache.sel_blocks().as<int32_t>();
    p.sel_count = cache.sel_count().as<int32_t>();
  }
  // A layer with the model's own sliding window (Gemma 3): its streaming heads see exactly that
  // window and no sink. The kernels read the window from the sequence table, so they get the
  // step's table with this window (written by begin_step) and sink 0.
  const int32_t model_window = cache.heads().model_window(layer);
  if (model_window > 0) {
    p.step.seqs = impl_->window_seqs(model_window);
    p.sink = 0;
  }
  LSERVE_CHECK(!reference || p.max_sel <= cuda::kReferenceMaxSel,
               "the reference attention kernel (head_dim 256, or forced) holds at most {} "
               "selected pages, not {}: lower --token-budget or raise --page-size",
               cuda::kReferenceMaxSel, p.max_sel);
  const cuda::Stream st = impl_->launch_stream();
  const auto decode_variant =
      reference ? cuda::AttnVariant::kReference : cuda::AttnVariant::kDecode;

  if (device_planned_) {
    // Every slot's items derived on the device: the same launches for every step of this size.
    p.work = nullptr;
    p.grid = decode_grid(plan.padded_rows, cache.sparse(), cfg);
    p.part_o = impl_->planned_part_o();
    p.part_lse = impl_->planned_part_lse();
    const int units = plan.padded_rows * p.grid.n_kv_heads * p.grid.units_per_head;
    LSERVE_CUDA_CHECK(cuda::launch_attention(p, units, d, decode_variant, st));
    LSERVE_CUDA_CHECK(cuda::launch_merge(p, nullptr, units, d, st));
    return;
  }

  // Layers whose heads have the same classes (and the same dense/sparse decode mode) share one
  // plan per step: planned and uploaded once, then only kernels are launched.
  std::vector<int8_t> signature;
  for (auto c : cache.heads().cls[layer]) signature.push_back(c == HeadClass::kRetrieval ? 0 : 1);
  signature.push_back(layer >= cache.sparse().selector_skip_layers ? 1 : 0);
  for (int i = 0; i < 4; ++i) signature.push_back(static_cast<int8_t>(model_window >> (8 * i)));
  const Impl::StagedAttention& sa = impl_->staged_attention(
      signature, d, [&] { return plan_attention(plan, cache.heads(), cache.sparse(), cfg); });
  p.part_o = sa.part_o.empty() ? nullptr : sa.part_o.as<float>();
  p.part_lse = sa.part_lse.empty() ? nullptr : sa.part_lse.as<float>();
  if (sa.n_mass > 0) {
    // Block-sparse prefill: this layer's estimate and kept blocks, which its kKeptBlocks tiles
    // read. The start-up checks keep this to bf16 pools and head_dim 64 / 128; a caller that
    // skips them (a test harness, a benchmark) is stopped here rather than reading fp8 as bf16.
    LSERVE_CHECK(!p.kv.fp8 && (d == 64 || d == 128),
                 "block-sparse prefill needs a bf16 KV pool and head_dim 64 or 128");
    const cuda::KvPoolView pool = p.kv.pool(false);
    cuda::PrefillMassParams mp{};
    mp.q = p.q;
    mp.n_heads = p.n_heads;
    mp.group = cfg.n_heads / cfg.n_kv_heads;
    mp.k = static_cast<const bf16*>(pool.k);
    mp.page_indices = p.step.page_indices;
    mp.head_slot = p.kv.head_slot;
    mp.page_size = p.kv.page_size;
    mp.n_pool = pool.n;
    mp.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
    mp.sampled_rows = sa.sampled_rows;
    mp.items = sa.mass_items;
    mp.n_items = sa.n_mass;
    mp.mass = sa.mass.as<float>();
    mp.max_blocks = sa.max_blocks;
    mp.scratch = sa.mass_scratch.as<float>();
    mp.scratch_stride = sa.mass_scratch.cols;
    LSERVE_CUDA_CHECK(cuda::launch_prefill_mass(mp, d, impl_->hopper(),
                                                static_cast<int>(sa.mass_scratch.rows), st));
    cuda::PrefillKeepParams kp{};
    kp.items = sa.mass_items;
    kp.mass = sa.mass.as<float>();
    kp.max_blocks = sa.max_blocks;
    kp.kept = sa.kept.as<int32_t>();
    kp.count = sa.kept_count.as<int32_t>();
    kp.totals = impl_->prefill_totals();
    LSERVE_CUDA_CHECK(cuda::launch_prefill_keep(kp, sa.n_mass, st));
    p.kept = kp.kept;
    p.kept_count = kp.count;
    p.kept_stride = sa.max_blocks;
  }
  auto launch = [&](const cuda::AttnWork* items, int n, cuda::AttnVariant variant) {
    if (n == 0) return;
    p.work = items;
    LSERVE_CUDA_CHECK(
        cuda::launch_attention(p, n, d, reference ? cuda::AttnVariant::kReference : variant, st));
  };
  auto prefill_variant = cuda::AttnVariant::kPrefill;
  if (impl_->hopper() && attn_kernels_ == AttnKernels::kAuto) {
    // FP8 pools: the wgmma tiles (the warp-specialised kernel reads bf16 tiles only).
    prefill_variant = p.kv.fp8 ? cuda::AttnVariant::kPrefillWgmma : cuda::AttnVariant::kPrefillWs;
  } else if (impl_->hopper() && attn_kernels_ == AttnKernels::kWgmmaTiles) {
    prefill_variant = cuda::AttnVariant::kPrefillWgmma;
  }
  launch(sa.decode, sa.n_decode, cuda::AttnVariant::kDecode);
  launch(sa.prefill, sa.n_prefill, prefill_variant);
  LSERVE_CUDA_CHECK(cuda::launch_merge(p, sa.merges, sa.n_merges, d, st));
}

void CudaBackend::sample(const Tensor& logits, const StepPlan& plan) {
  LSERVE_ASSERT(logits.dtype == DType::F32);
  const int rows = static_cast<int>(logits.rows);
  LSERVE_ASSERT(plan.sampling.size() >= static_cast<size_t>(rows));
  const auto [dev, host] = impl_->sampled_buffers(rows);
  const cudaStream_t st = impl_->stream();
  LSERVE_CUDA_CHECK(cuda::launch_sample(logits.as<float>(), logits.cols, rows, impl_->sample_rows(),
                                        impl_->logit_edits(), dev, impl_->launch_stream()));
  // Only the sampled tokens come back (a few hundred bytes a row), into pinned memory.
  LSERVE_CUDA_CHECK(
      cudaMemcpyAsync(host, dev, rows * sizeof(SampledToken), cudaMemcpyDeviceToHost, st));
  sampled_rows_ = rows;
}

std::span<const SampledToken> CudaBackend::sampled() {
  // The step's one wait: everything queued for it, up to the copy of its sampled tokens.
  impl_->end_span();
  LSERVE_CUDA_CHECK(cudaStreamSynchronize(impl_->stream()));
  impl_->account_span();
  return {impl_->sampled_host(), static_cast<size_t>(sampled_rows_)};
}

}  // namespace lserve
