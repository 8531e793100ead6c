// Launchers of the custom kernels: the only code compiled by nvcc. Each returns the launch status
// (callers check it); sizes and pointers are validated by the caller. Launchers taking a Stream
// may use programmatic dependent launch (stream.h); the others launch plainly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/kernels/params.h"
#include "backend/cuda/stream.h"

namespace lserve::cuda {

// out[r] = x[rows[r]]; also the embedding lookup (rows = token ids).
cudaError_t launch_gather_rows(const bf16* x, const int32_t* rows, int64_t n, int64_t cols,
                               bf16* out, Stream st);
cudaError_t launch_rms_norm(const bf16* x, const bf16* w, float eps, int64_t rows, int64_t cols,
                            bf16* out, Stream st);
cudaError_t launch_add(bf16* x, const bf16* y, int64_t n, Stream st);
cudaError_t launch_add_bias(bf16* x, const bf16* bias, int64_t n, int64_t cols, Stream st);
cudaError_t launch_silu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t n, Stream st);
cudaError_t launch_gelu_mul(const bf16* gate, const bf16* up, bf16* out, int64_t n, Stream st);
cudaError_t launch_scale(bf16* x, float s, int64_t n, Stream st);
cudaError_t launch_fill(bf16* x, float value, int64_t n, cudaStream_t st);
cudaError_t launch_fill(float* x, float value, int64_t n, cudaStream_t st);
cudaError_t launch_random(bf16* x, int64_t n, uint64_t seed, float scale, cudaStream_t st);
cudaError_t launch_random_e4m3(uint8_t* x, int64_t n, uint64_t seed, cudaStream_t st);

cudaError_t launch_rope_append(const RopeAppendParams& p, int n_groups, Stream st);
// Scoring grid: n_seqs x sel_heads x chunks CTAs. Supported head dims: 64, 128, 256.
cudaError_t launch_select_pages(const SelectorParams& p, int n_seqs, int sel_heads, int chunks,
                                int head_dim, Stream st);

// Lets the attention kernels use up to `bytes` of dynamic shared memory (once per device, at
// backend start: a per-launch call would add host time to every decode step).
cudaError_t allow_attention_smem(int bytes);

// Whether the current device runs this build's wgmma code (an sm_90 device and a 90a build):
// *yes is set through a one-thread probe kernel; synchronises the stream.
cudaError_t probe_wgmma(bool* yes, cudaStream_t st);

// kPrefillWgmma: the prefill tiles on Hopper tensor cores, two warpgroups (bf16 and fp8 pools);
// kPrefillWs: the warp-specialised Hopper prefill (attention_ws.cuh; bf16 pools only). Both only
// where probe_wgmma says yes.
enum class AttnVariant { kDecode, kPrefill, kPrefillWgmma, kPrefillWs, kReference };
// n_items work items (p.work), or n_items units x p.grid.splits CTAs when p.work is null (a
// device-planned decode step). Supported head dims: 64 and 128 (every variant), 256 (kReference
// only: the fast kernels cover 64 and 128); cudaErrorInvalidValue otherwise, and for kPrefillWs
// over fp8 pools.
cudaError_t launch_attention(const AttnParams& p, int n_items, int head_dim, AttnVariant variant,
                             Stream st);
// The warp-specialised prefill's tensor maps over the layer's bf16 pools (kPrefillWs encodes
// them at each launch: host-side work, about a microsecond each). box_rows 0 (every key gathered
// by cp.async) for fp8 pools and page sizes ws_tma_box_rows rejects; cudaErrorNotSupported where
// the driver has no tensor-map encoder.
cudaError_t encode_ws_maps(const LayerKv& kv, WsTmaMaps* maps);
// Combines split-KV partial results into p.out (after the decode attention launch): n_items
// merge items, or, with items null, the n_items units of a device-planned step. Head dims 64,
// 128 and 256 (the last by the reference kernel's merge).
cudaError_t launch_merge(const AttnParams& p, const MergeItem* items, int n_items, int head_dim,
                         Stream st);

// Dynamic block-sparse prefill (kernels/prefill_blocks.cuh): the estimated share of each key
// block per item, then the kept blocks. Head dims 64 and 128 (cudaErrorInvalidValue otherwise);
// items' blocks at most p.max_blocks <= kPrefillKeepMaxBlocks. Each sets its kernel's shared
// memory limit before launching (more than the default 48 KB; a host call per launch, which a
// prefill step's few launches per layer can afford). The estimate runs `ctas` CTAs (at most one
// per SM is resident) over p.n_items items, with wgmma on sm_90a or mma.sync elsewhere; p.scratch
// holds ctas x p.scratch_stride floats, the stride at least prefill_mass_scratch_floats (of the
// estimate p.sampled_rows picks).
cudaError_t launch_prefill_mass(const PrefillMassParams& p, int head_dim, bool wgmma, int ctas,
                                Stream st);
int64_t prefill_mass_scratch_floats(int max_blocks, bool sampled_rows);
// Shared memory one estimate CTA takes (the device must allow it per block).
int prefill_mass_smem_bytes(int head_dim, bool wgmma, bool sampled_rows);
cudaError_t launch_prefill_keep(const PrefillKeepParams& p, int n_items, Stream st);

}  // namespace lserve::cuda
