// Parameter structs of the custom kernels: plain data the host fills and passes by value.
// Host-compilable (no device code), so planning and launching code can be ordinary C++.
#pragma once

#include <cuda.h>  // CUtensorMap (a plain 128-byte struct; no driver call here)
#include <cuda_bf16.h>

#include <cstdint>

#include "backend/cuda/kernels/kv_params.h"
#include "backend/cuda/kernels/step_params.h"

namespace lserve::cuda {

constexpr int kSelectorThreads = 256;
constexpr int kScoreMaxPagesPerWarp = 64;  // SelectorParams::pages_per_warp at most
constexpr int kSelectorMaxGroup = 16;
constexpr int kKeyTile = 64;
// Prefill tiles: 8 warps x 1 m-tile x 16 rows = 128 rows. Two m-tiles per warp (each K/V
// fragment feeding both) halve shared-memory reads but spill at head_dim 128 and measured slower
// on the H200 (128 vs 139 TFLOP/s at 128K).
constexpr int kPrefillWarps = 8;
constexpr int kPrefillMTiles = 1;
constexpr int kPrefillRows = 16 * kPrefillWarps * kPrefillMTiles;
constexpr int kDecodeRows = 16;  // decode tiles: 16 rows, keys split over 4 warps
// The reference kernel (attention_reference.cuh), which also serves head_dim 256 (Gemma 3): its
// selected-page list lives in static shared memory, and at head_dim 256 prefill tiles of 32 rows
// (8 per warp) give 4x the CTAs of 128-row ones.
constexpr int kReferenceMaxSel = 1024;
constexpr int kReferencePrefillRows = 32;

// Shared memory of attention_kernel<D, ...> with `rows` tile rows and key tiles of `key_tile`
// keys, in bytes from its aligned base (1024 bytes on wgmma, the swizzle period its descriptors
// assume; 128 elsewhere, enough for conflict-free ldmatrix). In order: the Q tile; bf16 K and V
// tiles (bf16 pools: one per stage; FP8 pools on wgmma: the one widened current tile; FP8 on
// mma.sync: none, fragments are widened in registers); E4M3 K and V tiles (FP8: one per stage,
// rows padded to 128 bytes so the swizzle of tile_offset applies) and their per-row scales; key
// positions and pool rows of the located tiles (stages + 2 slots); the selected-page list. FP8 on
// mma.sync keeps at least as many bytes in flight as bf16 (three 64-key tiles, or two of 128):
// decode is bound by the bytes it keeps in flight, not by its arithmetic.
struct AttnSmem {
  int stages, slots, align, f8_tile, ks, vs, k8, v8, kscale, vscale, kpos, krow, list;
};
constexpr AttnSmem attn_smem(int head_dim, int rows, bool fp8, bool wgmma,
                             int key_tile = kKeyTile) {
  const bool direct = fp8 && !wgmma;
  AttnSmem s{};
  s.stages = direct ? (key_tile > kKeyTile ? 2 : 3) : 2;
  s.slots = s.stages + 2;
  s.align = wgmma ? 1024 : 128;
  const int bf16_tiles = fp8 ? (direct ? 0 : 1) : s.stages;
  const int f8_tiles = fp8 ? s.stages : 0;
  s.f8_tile = key_tile * (head_dim < 128 ? 128 : head_dim);
  s.ks = rows * head_dim * 2;
  s.vs = s.ks + bf16_tiles * key_tile * head_dim * 2;
  s.k8 = s.vs + bf16_tiles * key_tile * head_dim * 2;
  s.v8 = s.k8 + f8_tiles * s.f8_tile;
  s.kscale = s.v8 + f8_tiles * s.f8_tile;
  s.vscale = s.kscale + f8_tiles * key_tile * 4;
  s.kpos = s.vscale + f8_tiles * key_tile * 4;
  s.krow = s.kpos + s.slots * key_tile * 4;
  s.list = s.krow + s.slots * key_tile * 4;
  return s;
}
constexpr int attn_smem_bytes(int head_dim, int rows, int max_sel, bool fp8, bool wgmma,
                              int key_tile = kKeyTile) {
  const AttnSmem s = attn_smem(head_dim, rows, fp8, wgmma, key_tile);
  return s.align + s.list + (max_sel + 2) * 4;
}
// Keys per decode tile: 64 (16 per warp) for bf16 pools; 128 for E4M3 pools, so a tile's fixed
// costs (its barriers, the page-table reads, the softmax's row reductions) are paid per as many
// bytes as a bf16 tile's.
constexpr int decode_key_tile(bool fp8) { return fp8 ? 2 * kKeyTile : kKeyTile; }
// Three decode CTAs per multiprocessor (what the planners assume) need 3 x (shared memory + the
// 1 KiB the hardware reserves per CTA) <= 228 KiB on sm_90: true for both pool types at head_dim
// 128 while the selected-page list (token budget / page size) holds <= 200 pages; beyond that
// two CTAs run, correct but under-filled.
static_assert(3 * (attn_smem_bytes(128, kDecodeRows, 200, true, false, decode_key_tile(true)) +
                   1024) <=
              228 * 1024);
static_assert(3 * (attn_smem_bytes(128, kDecodeRows, 200, false, false, decode_key_tile(false)) +
                   1024) <=
              228 * 1024);

// The warp-specialised Hopper prefill (attention_ws.cuh): a producer warpgroup and two consumer
// warpgroups (kPrefillRows rows), 128-key tiles, kWsKStages K and kWsVStages V stages. Shared
// memory from the 1024-byte aligned base: Q, the K stages, the V stages, the consumers' key
// positions, the producer's pool rows for gathers (kWsRowSlots tiles), the mbarriers (full and
// empty K, full and empty V), the selected-page list.
constexpr int kWsThreads = 384;
constexpr int kWsKeyTile = 128;
// Stages per operand (a third K stage, or a third V stage, measured no faster on the H200).
constexpr int kWsKStages = 2;
constexpr int kWsVStages = 2;
constexpr int kWsRowSlots = 2;  // pool rows of the producer's gathered tiles (alternating slots)

// The warp-specialised kernel's TMA boxes: box_rows consecutive pool rows (keys) x 64 columns,
// 128-byte swizzled as the stages are, one tensor map per pool of the layer ([0] retrieval, [1]
// streaming). A box is a page (or 128 keys of a longer one), so pages must split or tile the
// 128-key tiles evenly and hold whole 8-row swizzle periods; other page sizes (box_rows 0), fp8
// pools, and any box whose keys are not all present and consecutive in the pool are gathered
// key by key with cp.async instead.
struct WsTmaMaps {
  CUtensorMap k[2];
  CUtensorMap v[2];
  int32_t box_rows;
};
constexpr int ws_tma_box_rows(int page_size) {
  if (page_size <= 0 || page_size % 8 != 0) return 0;
  if (page_size <= kWsKeyTile) return kWsKeyTile % page_size == 0 ? page_size : 0;
  return page_size % kWsKeyTile == 0 ? kWsKeyTile : 0;
}
struct WsSmem {
  int ks, vs, cpos, krow, bars, list;
};
constexpr WsSmem ws_smem(int head_dim) {
  WsSmem s{};
  s.ks = kPrefillRows * head_dim * 2;
  s.vs = s.ks + kWsKStages * kWsKeyTile * head_dim * 2;
  s.cpos = s.vs + kWsVStages * kWsKeyTile * head_dim * 2;
  s.krow = s.cpos + 2 * 2 * kWsKeyTile * 4;  // [consumer][2][BN] key positions
  s.bars = s.krow + kWsRowSlots * kWsKeyTile * 4;
  s.list = s.bars + 2 * (kWsKStages + kWsVStages) * 8;
  return s;
}
constexpr int ws_smem_bytes(int head_dim, int max_sel) {
  return 1024 + ws_smem(head_dim).list + (max_sel + 2) * 4;
}

// The estimate and keep kernels of dynamic block-sparse prefill (prefill_blocks.cuh), over the
// items of step_params.h.
struct PrefillMassParams {
  const bf16* q;  // [tokens, n_heads * head_dim]
  int32_t n_heads;
  int32_t group;  // query heads per KV head
  const bf16* k;  // the pool's key rows: (page * n_pool + head_slot) * page_size + pos % page_size
  const int32_t* page_indices;
  const int32_t* head_slot;  // [n_kv_heads]
  int32_t page_size;
  int32_t n_pool;
  float scale;        // the attention's score scale, 1 / sqrt(head_dim)
  bool sampled_rows;  // the estimate: sampled rows, else the antidiagonal (PrefillEstimate)
  const PrefillMassItem* items;
  int32_t n_items;
  float* mass;  // [items, max_blocks]: item i's share per key block 0 .. its query block
  int32_t max_blocks;
  float* scratch;  // [gridDim.x, scratch_stride]: each CTA's (prefill_mass_scratch)
  int64_t scratch_stride;
};
// The kept key blocks of each item's mass vector (keep_prefill_blocks's rule), ascending.
struct PrefillKeepParams {
  const PrefillMassItem* items;
  const float* mass;  // as PrefillMassParams::mass
  int32_t max_blocks;
  int32_t* kept;               // [items, max_blocks]
  int32_t* count;              // [items]
  unsigned long long* totals;  // optional: += blocks kept, += causal blocks (all items)
};

constexpr int kRopeMaxHalf = 128;  // the RoPE kernel's frequency table: head_dim <= 256

struct RopeAppendParams {
  DeviceStep step;
  const AppendGroup* groups;
  bf16* q;        // [n_tokens, n_heads * d], rotated in place
  bf16* k;        // [n_tokens, n_kv_heads * d], rotated in place
  const bf16* v;  // [n_tokens, n_kv_heads * d]
  int32_t n_heads;
  int32_t n_kv_heads;
  const float* inv_freq;   // [d / 2]
  int32_t half_split;      // 1: pairs (i, i + d/2); 0: pairs (2i, 2i + 1)
  float attention_factor;  // multiplies cos and sin (YaRN); 1 otherwise
  LayerKv kv;
};

struct SelectorParams {
  DeviceStep step;
  // [gridDim.x] sequences refreshing at this layer; null in a device-planned step: CTA row x is
  // sequence slot x, which works only if its flags ask for a refresh at this layer.
  const int32_t* seq_list;
  const bf16* q;  // [n_tokens, n_heads * d]
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t per_query_head;  // selection heads are query heads (else KV heads)
  int32_t budget_cap;      // the engine's token budget (selection rows hold budget/P pages)
  int32_t layer;
  int32_t n_layers;
  int32_t skip_layers;  // selector_skip_layers
  LayerKv kv;
  uint32_t* scratch;  // [gridDim.x * gridDim.y * max_blocks] page score keys
  int32_t max_blocks;
  // Pages each scoring warp takes (sized so the grid is about a wave); 0: each CTA sizes it
  // from its own sequence's page count over gridDim.z CTAs.
  int32_t pages_per_warp;
  int32_t* sel_blocks;  // [slots * n_layers * sel_heads, max_sel]
  int32_t* sel_count;   // [slots * n_layers * sel_heads]
  int32_t max_sel;
};

struct AttnParams {
  DeviceStep step;
  const AttnWork* work;  // host-planned items; null: decode items derived from `grid`
  DecodeGrid grid;
  const bf16* q;    // [n_tokens, n_heads * d]
  bf16* out;        // [n_tokens, n_heads * d]
  float* part_o;    // [partials, rows_per_item, d] normalised partial outputs
  float* part_lse;  // [partials, rows_per_item] log2-sum-exp of the partial
  int32_t n_heads;
  float scale_log2;  // log2(e) / sqrt(d)
  int32_t sink;
  LayerKv kv;
  const int32_t* sel_blocks;  // selections of this layer: row (slot, layer, head), max_sel wide
  const int32_t* sel_count;
  int32_t sel_heads;
  int32_t max_sel;
  int32_t layer;
  int32_t n_layers;
  int32_t per_query_head;
  const int32_t* kept;        // kKeptBlocks items: [lists, kept_stride] kept key blocks
  const int32_t* kept_count;  // [lists]
  int32_t kept_stride;
};

}  // namespace lserve::cuda
