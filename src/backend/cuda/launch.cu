#include "backend/cuda/launch.h"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <algorithm>

#include "backend/cuda/kernels/attention.cuh"
#include "backend/cuda/kernels/attention_merge.cuh"
#include "backend/cuda/kernels/attention_reference.cuh"
#include "backend/cuda/kernels/attention_ws.cuh"
#include "backend/cuda/kernels/elementwise.cuh"
#include "backend/cuda/kernels/prefill_blocks.cuh"
#include "backend/cuda/kernels/rope_append.cuh"
#include "backend/cuda/kernels/selector.cuh"
#include "backend/cuda/launch_kernel.cuh"
#include "sparse/prefill_blocks.h"

namespace lserve::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 18)));
}

// The driver's tensor-map encoder (host-side work only), looked up once: the runtime links no
// driver symbols. Null where the driver lacks it.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const auto fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

dim3 attention_grid(const AttnParams& p, int n_items) {
  return p.work ? dim3(static_cast<unsigned>(n_items))
                : dim3(static_cast<unsigned>(n_items), static_cast<unsigned>(p.grid.splits));
}

// The tile configurations (attention.cuh): decode, prefill on mma.sync, prefill on wgmma. Two
// CTAs per multiprocessor for wgmma prefill (128 registers) measured 225 TFLOP/s against 160.
template <int D, bool FP8>
struct AttnKernels {
  static constexpr int kDecodeKeys = decode_key_tile(FP8);
  static constexpr auto decode = attention_kernel<D, 1, 4, 1, false, 3, FP8, kDecodeKeys>;
  static constexpr auto prefill =
      attention_kernel<D, kPrefillWarps, 1, kPrefillMTiles, false, 1, FP8>;
  static constexpr auto prefill_wgmma =
      attention_kernel<D, kPrefillWarps, 1, kPrefillMTiles, true, 2, FP8>;
};

template <int D>
cudaError_t launch_reference_attention(const AttnParams& p, int n_items, Stream st) {
  return launch_kernel(attention_reference_kernel<D>, attention_grid(p, n_items), kReferenceThreads,
                       0, st, p);
}

template <int D, bool FP8>
cudaError_t attention_dim(const AttnParams& p, int n_items, AttnVariant v, Stream st) {
  using K = AttnKernels<D, FP8>;
  const dim3 grid = attention_grid(p, n_items);
  switch (v) {
    case AttnVariant::kDecode:
      return launch_kernel(K::decode, grid, 128,
                           attn_smem_bytes(D, kDecodeRows, p.max_sel, FP8, false, K::kDecodeKeys),
                           st, p);
    case AttnVariant::kPrefill:
      return launch_kernel(K::prefill, grid, 32 * kPrefillWarps,
                           attn_smem_bytes(D, kPrefillRows, p.max_sel, FP8, false), st, p);
    case AttnVariant::kPrefillWgmma:
      return launch_kernel(K::prefill_wgmma, grid, 32 * kPrefillWarps,
                           attn_smem_bytes(D, kPrefillRows, p.max_sel, FP8, true), st, p);
    case AttnVariant::kPrefillWs:
      if constexpr (FP8) {
        return cudaErrorInvalidValue;
      } else {
        WsTmaMaps maps;
        if (const cudaError_t err = encode_ws_maps(p.kv, &maps); err != cudaSuccess) return err;
        return launch_kernel(prefill_ws_kernel<D>, grid, kWsThreads, ws_smem_bytes(D, p.max_sel),
                             st, p, maps);
      }
    case AttnVariant::kReference:
      return launch_reference_attention<D>(p, n_items, st);
  }
  return cudaErrorInvalidValue;
}

// Lets `kernel` take up to `bytes` of shared memory per block, its static shared memory included
// (the work item the tiles keep there): the dynamic limit is what the static part leaves.
template <typename Kernel>
cudaError_t allow_smem(Kernel kernel, int bytes) {
  cudaFuncAttributes attr{};
  if (const cudaError_t err = cudaFuncGetAttributes(&attr, kernel); err != cudaSuccess) return err;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              bytes - static_cast<int>(attr.sharedSizeBytes));
}

template <int D, bool FP8>
cudaError_t allow_smem_dim(int bytes) {
  using K = AttnKernels<D, FP8>;
  for (auto kernel : {K::decode, K::prefill, K::prefill_wgmma}) {
    if (const cudaError_t err = allow_smem(kernel, bytes); err != cudaSuccess) return err;
  }
  if constexpr (!FP8) return allow_smem(prefill_ws_kernel<D>, bytes);
  return cudaSuccess;
}

__global__ void wgmma_probe_kernel(int32_t* out) {
#ifdef LSERVE_WGMMA
  *out = 1;
#else
  *out = 0;
#endif
}

}  // namespace

cudaError_t probe_wgmma(bool* yes, cudaStream_t st) {
  int32_t* d = nullptr;
  cudaError_t err = cudaMallocAsync(&d, sizeof(int32_t), st);
  if (err != cudaSuccess) return err;
  int32_t h = 0;
  wgmma_probe_kernel<<<1, 1, 0, st>>>(d);
  err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaMemcpyAsync(&h, d, sizeof(h), cudaMemcpyDeviceToHost, st);
  cudaFreeAsync(d, st);
  if (err == cudaSuccess) err = cudaStreamSynchronize(st);
  *yes = h == 1;
  return err;
}

static_assert(kAntidiagStride == kMassRowStride && kSampledRowStride == kMassRowStride &&
              kPrefillBlock == kMassBlock);

template <int D, bool kWgmma, int S>
cudaError_t launch_prefill_mass_estimate(const PrefillMassParams& p, int ctas, Stream st) {
  const int smem = prefill_mass_smem(D, kWgmma, S);
  const cudaError_t err = cudaFuncSetAttribute(prefill_mass_kernel<D, kWgmma, S>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  return launch_kernel(prefill_mass_kernel<D, kWgmma, S>, dim3(static_cast<unsigned>(ctas)),
                       kMassThreads, smem, st, p);
}

template <int D, bool kWgmma>
cudaError_t launch_prefill_mass_dim(const PrefillMassParams& p, int ctas, Stream st) {
  return p.sampled_rows ? launch_prefill_mass_estimate<D, kWgmma, 1>(p, ctas, st)
                        : launch_prefill_mass_estimate<D, kWgmma, kMassRowStride>(p, ctas, st);
}

cudaError_t launch_prefill_mass(const PrefillMassParams& p, int head_dim, bool wgmma, int ctas,
                                Stream st) {
  if (p.n_items <= 0) return cudaSuccess;
  if (ctas <= 0 || p.scratch_stride < prefill_mass_scratch_floats(p.max_blocks, p.sampled_rows)) {
    return cudaErrorInvalidValue;
  }
  ctas = std::min(ctas, p.n_items);
  if (head_dim == 64) {
    return wgmma ? launch_prefill_mass_dim<64, true>(p, ctas, st)
                 : launch_prefill_mass_dim<64, false>(p, ctas, st);
  }
  if (head_dim == 128) {
    return wgmma ? launch_prefill_mass_dim<128, true>(p, ctas, st)
                 : launch_prefill_mass_dim<128, false>(p, ctas, st);
  }
  return cudaErrorInvalidValue;
}

int64_t prefill_mass_scratch_floats(int max_blocks, bool sampled_rows) {
  return prefill_mass_scratch(max_blocks, mass_stride(sampled_rows));
}

int prefill_mass_smem_bytes(int head_dim, bool wgmma, bool sampled_rows) {
  return prefill_mass_smem(head_dim, wgmma, mass_stride(sampled_rows)) +
         4 * kMassRows * static_cast<int>(sizeof(float));
}

cudaError_t launch_prefill_keep(const PrefillKeepParams& p, int n_items, Stream st) {
  if (n_items <= 0) return cudaSuccess;
  if (p.max_blocks > kPrefillKeepMaxBlocks) return cudaErrorInvalidValue;
  const int smem = prefill_keep_smem(p.max_blocks);
  const cudaError_t err =
      cudaFuncSetAttribute(prefill_keep_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) return err;
  return launch_kernel(prefill_keep_kernel, dim3(static_cast<unsigned>(n_items)), kKeepThreads,
                       smem, st, p);
}

cudaError_t allow_attention_smem(int bytes) {
  for (auto allow : {allow_smem_dim<64, false>, allow_smem_dim<128, false>,
                     allow_smem_dim<64, true>, allow_smem_dim<128, true>}) {
    const cudaError_t err = allow(bytes);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t launch_gather_rows(const bf16* x, const int32_t* rows, int64_t n, int64_t cols,
                               bf16* out, Stream st) {
  return launch_kernel(gather_rows_kernel<bf16>, static_cast<unsigned>(n), 128, 0, st, x, rows,
                       cols, out);
}

cudaError_t launch_rms_norm(const bf16* x, const bf16* w, float eps, int64_t rows, int64_t cols,
                            bf16* out, Stream st) {
  const auto grid = static_cast<unsigned>(rows);
  const bool vec = cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t chunks = cols / 8;
  // Threads: one 8-element piece each up to 256, then up to 4 pieces per thread.
  const int threads = static_cast<int>(std::min<int64_t>(256, (chunks + 31) / 32 * 32));
  if (vec && chunks <= 256) {
    return launch_kernel(rms_norm_vec_kernel<1>, grid, threads, 0, st, x, w, eps, cols, out);
  }
  if (vec && chunks <= 512) {
    return launch_kernel(rms_norm_vec_kernel<2>, grid, 256, 0, st, x, w, eps, cols, out);
  }
  if (vec && chunks <= 1024) {
    return launch_kernel(rms_norm_vec_kernel<4>, grid, 256, 0, st, x, w, eps, cols, out);
  }
  return launch_kernel(rms_norm_kernel<bf16>, grid, 256, 0, st, x, w, eps, cols, out);
}

cudaError_t launch_add(bf16* x, const bf16* y, int64_t n, Stream st) {
  return launch_kernel(add_kernel<bf16>, grid_for(n), kThreads, 0, st, x, y, n);
}

cudaError_t launch_add_bias(bf16* x, const bf16* bias, int64_t n, int64_t cols, Stream st) {
  return launch_kernel(add_bias_kernel<bf16>, grid_for(n), kThreads, 0, st, x, bias, n, cols);
}

cudaError_t launch_silu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t n, Stream st) {
  return launch_kernel(silu_mul_kernel<bf16>, grid_for(n), kThreads, 0, st, gate, up, out, n);
}

cudaError_t launch_gelu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t n, Stream st) {
  return launch_kernel(gelu_mul_kernel<bf16>, grid_for(n), kThreads, 0, st, gate, up, out, n);
}

cudaError_t launch_scale(bf16* x, float s, int64_t n, Stream st) {
  return launch_kernel(scale_kernel<bf16>, grid_for(n), kThreads, 0, st, x, s, n);
}

cudaError_t launch_fill(bf16* x, float value, int64_t n, cudaStream_t st) {
  fill_kernel<<<grid_for(n), kThreads, 0, st>>>(x, value, n);
  return cudaGetLastError();
}

cudaError_t launch_fill(float* x, float value, int64_t n, cudaStream_t st) {
  fill_kernel<<<grid_for(n), kThreads, 0, st>>>(x, value, n);
  return cudaGetLastError();
}

cudaError_t launch_random(bf16* x, int64_t n, uint64_t seed, float scale, cudaStream_t st) {
  random_bf16_kernel<<<grid_for(n), kThreads, 0, st>>>(x, n, seed, scale);
  return cudaGetLastError();
}

cudaError_t launch_random_e4m3(uint8_t* x, int64_t n, uint64_t seed, cudaStream_t st) {
  random_e4m3_kernel<<<grid_for(n), kThreads, 0, st>>>(x, n, seed);
  return cudaGetLastError();
}

cudaError_t launch_rope_append(const RopeAppendParams& p, int n_groups, Stream st) {
  if (p.kv.head_dim / 2 > kRopeMaxHalf) return cudaErrorInvalidValue;
  const dim3 grid(static_cast<unsigned>(n_groups), static_cast<unsigned>(p.n_kv_heads));
  return launch_kernel(rope_append_kernel, grid, 128, 0, st, p);
}

cudaError_t launch_select_pages(const SelectorParams& p, int n_seqs, int sel_heads, int chunks,
                                int head_dim, Stream st) {
  const dim3 score_grid(static_cast<unsigned>(n_seqs), static_cast<unsigned>(sel_heads),
                        static_cast<unsigned>(chunks));
  cudaError_t err = cudaErrorInvalidValue;
  if (head_dim == 64) {
    err = launch_kernel(score_pages_kernel<64>, score_grid, kSelectorThreads, 0, st, p);
  } else if (head_dim == 128) {
    err = launch_kernel(score_pages_kernel<128>, score_grid, kSelectorThreads, 0, st, p);
  } else if (head_dim == 256) {
    err = launch_kernel(score_pages_kernel<256>, score_grid, kSelectorThreads, 0, st, p);
  }
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(n_seqs), static_cast<unsigned>(sel_heads));
  const size_t smem = static_cast<size_t>(std::min(p.max_blocks, kTopSmemKeys)) * sizeof(uint32_t);
  return launch_kernel(top_pages_kernel, grid, kTopThreads, smem, st, p);
}

cudaError_t encode_ws_maps(const LayerKv& kv, WsTmaMaps* maps) {
  *maps = WsTmaMaps{};
  const int box_rows = ws_tma_box_rows(kv.page_size);
  if (kv.fp8 || box_rows == 0 || (kv.head_dim != 64 && kv.head_dim != 128)) return cudaSuccess;
  const auto encode = tensor_map_encoder();
  if (!encode) return cudaErrorNotSupported;
  // A pool is a [rows, head_dim] bf16 matrix; a box is box_rows rows x 64 columns (128 bytes,
  // the widest row the 128-byte swizzle takes), so a key tile takes head_dim / 64 boxes per page.
  auto one = [&](void* base, int64_t rows, CUtensorMap* map) {
    if (!base || rows <= 0) return true;
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(kv.head_dim),
                                static_cast<cuuint64_t>(rows)};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>(kv.head_dim) * 2};
    const cuuint32_t box[2] = {64, static_cast<cuuint32_t>(box_rows)};
    const cuuint32_t steps[2] = {1, 1};
    return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides, box, steps,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  if (!one(kv.k_ret, kv.rows_ret, &maps->k[0]) || !one(kv.v_ret, kv.rows_ret, &maps->v[0]) ||
      !one(kv.k_str, kv.rows_str, &maps->k[1]) || !one(kv.v_str, kv.rows_str, &maps->v[1])) {
    return cudaErrorInvalidValue;
  }
  maps->box_rows = box_rows;
  return cudaSuccess;
}

cudaError_t launch_attention(const AttnParams& p, int n_items, int head_dim, AttnVariant variant,
                             Stream st) {
  if (n_items == 0) return cudaSuccess;
  if (head_dim == 64) {
    return p.kv.fp8 ? attention_dim<64, true>(p, n_items, variant, st)
                    : attention_dim<64, false>(p, n_items, variant, st);
  }
  if (head_dim == 128) {
    return p.kv.fp8 ? attention_dim<128, true>(p, n_items, variant, st)
                    : attention_dim<128, false>(p, n_items, variant, st);
  }
  if (head_dim == 256) {
    // The fast kernels (attention.cuh) cover head_dim 64 and 128; 256 (Gemma 3) has only the
    // reference kernel (bf16 and fp8 pools alike).
    if (variant != AttnVariant::kReference) return cudaErrorInvalidValue;
    return launch_reference_attention<256>(p, n_items, st);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_merge(const AttnParams& p, const MergeItem* items, int n_items, int head_dim,
                         Stream st) {
  if (n_items == 0) return cudaSuccess;
  constexpr int kMergeThreads = 128;
  if (head_dim == 64) {
    const dim3 grid(static_cast<unsigned>(n_items), 16 / (kMergeThreads / 16));
    return launch_kernel(merge_kernel<64, kMergeThreads>, grid, kMergeThreads, 0, st, p, items);
  }
  if (head_dim == 128) {
    const dim3 grid(static_cast<unsigned>(n_items), 16 / (kMergeThreads / 32));
    return launch_kernel(merge_kernel<128, kMergeThreads>, grid, kMergeThreads, 0, st, p, items);
  }
  if (head_dim == 256) {
    // merge_kernel holds a row in D / 4 <= 32 threads: the reference kernel's own merge.
    return launch_kernel(merge_reference_kernel<256>, static_cast<unsigned>(n_items),
                         kReferenceThreads, 0, st, p, items);
  }
  return cudaErrorInvalidValue;
}

}  // namespace lserve::cuda
