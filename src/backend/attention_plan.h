// Host-side planning of one layer's attention for a device backend: which CTA does which rows and
// which key ranges (the work items of cuda/kernels/attention.cuh), and how split-KV partial
// results are merged. Pure host code, so its coverage is tested without a GPU.
#pragma once

#include <vector>

#include "backend/cuda/kernels/step_params.h"
#include "kv/kv_layout.h"
#include "kv/step_plan.h"
#include "sparse/sparse_config.h"

namespace lserve {

struct AttentionPlanConfig {
  int layer = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int num_sms = 132;         // split decode work so about three CTAs per multiprocessor are busy
  int decode_rows = 16;      // rows of the decode kernel's tile
  int prefill_rows = 128;    // rows of the prefill kernel's tile (cuda::kPrefillRows)
  int min_split_keys = 256;  // below this, a split's fixed costs outweigh the parallelism
  int decode_key_tile = 64;  // keys per decode tile (cuda::decode_key_tile): splits are whole tiles
};

struct AttentionPlan {
  std::vector<cuda::AttnWork> prefill;  // prefill_rows-row tiles, heaviest first
  std::vector<cuda::AttnWork> decode;   // 16-row tiles, possibly split over keys
  std::vector<cuda::MergeItem> merges;  // one per split decode item
  int n_partials = 0;
  // Dynamic block-sparse prefill (SeqStep::prefill_sparsity): an estimate per (query block,
  // retrieval KV head), whose kept-block list row the block's kKeptBlocks tiles read
  // (AttnWork::list); the most key blocks any of them has.
  std::vector<cuda::PrefillMassItem> prefill_mass;
  int prefill_max_blocks = 0;
  PrefillEstimate prefill_estimate = PrefillEstimate::kAntidiagonal;  // the sparse settings'
};

// The device copy of sequence s of the plan (page-table bases, streaming window, flags).
cuda::SeqInfo seq_info(const StepPlan& plan, size_t s);

// Streaming heads of a layer with the model's own sliding window (heads.model_window) are planned
// with that window, sink 0 (the kernels must get the same: AttnParams::sink 0 and a sequence
// table whose stream_window is that window).
AttentionPlan plan_attention(const StepPlan& plan, const HeadMap& heads,
                             const SparseAttentionConfig& sparse, const AttentionPlanConfig& cfg);

// The launch shape of a device-planned decode step of `rows` sequence slots (CUDA graphs): as
// many splits per unit as fill about three CTAs per multiprocessor with every unit long.
cuda::DecodeGrid decode_grid(int rows, const SparseAttentionConfig& sparse,
                             const AttentionPlanConfig& cfg);

// Groups of new tokens for the RoPE/append kernel: per sequence, the tokens of each logical page.
std::vector<cuda::AppendGroup> plan_append(const StepPlan& plan, int logical_page_size);

}  // namespace lserve
