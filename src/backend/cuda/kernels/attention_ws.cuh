// Warp-specialised prefill attention for Hopper (sm_90a), bf16 pools: the same work items, key
// ranges and masks as attention.cuh's prefill tiles (128 rows: a GQA group's heads of up to 128
// queries), with the roles split (FlashAttention-3's structure, written for the paged pools):
//
// - Producer warpgroup (warps 0-3, 56 registers): per 128-key tile, each warp works out which
//   of its TMA boxes (a page, or 128 keys of a longer one: WsTmaMaps) are whole, one lane per
//   box (the box's first key's page-table read, issued a tile ahead, and its last key's
//   position), and warp 0 loads them (cp.async.bulk.tensor, one instruction per box and 64
//   columns, into the 128-byte-swizzled stages). Only a tile with keys outside whole boxes (the
//   page the item's keys end in, page sizes without boxes) has the warpgroup look up each key
//   and gather those keys with cp.async (coalesced: 16 lanes per 256-byte row). Step t loads K
//   of tile t, then V of tile t - 1 (the order the consumers use them in). No producer thread
//   waits for a copy: each arrives on the stage's "full" mbarrier at once where the tile is all
//   boxes (the usual case: no per-key work), else through
//   cp.async.mbarrier.arrive, which fires once its gathers have landed; the barrier completes
//   when the boxes' bytes are in too. Each stage also has an "empty" mbarrier that the
//   consumers' warps arrive on.
// - Two consumer warpgroups (224 registers), 64 rows each: S = Q K^T (wgmma m64n128k16, both
//   operands in shared memory), then, while that runs, O += P V of the previous tile (wgmma with
//   P from registers); the softmax of tile t (mask, row maxima, exponentials) runs while
//   P V of tile t - 1 is still on the tensor cores, and only the output's rescale waits for it.
//   The two warpgroups take turns issuing those products (ping-pong, through named barriers),
//   so one's softmax also overlaps the other's products. They load the queries themselves
//   while the producer starts on the first tiles.
//   K's stage is released as soon as its scores are read, V's once its product is retired.
//   Each consumer warpgroup works out its tiles' key positions itself (arithmetic on the work
//   item, no page-table read): once per item, the spans of tiles that need no mask at all
//   (KeyTiles::whole_tiles: dense, streaming and kept-block items), and for the other tiles the
//   positions, shared among its warps through its own shared-memory slots and a named barrier.
//   Only K and V data (TMA, cp.async) cross from producer to consumers, so every handoff is
//   ordered by a barrier that compute-sanitizer's racecheck follows (it does not follow
//   mbarriers: positions handed over by the producer were reported as races).
//
// Pages need not be contiguous (streaming heads' sink + window, kept blocks), so a tile is
// loaded page by page (a box per page) rather than as one box; keys that do not exist (past the
// sequence, past a selection) are zero-filled by cp.async and masked. FP8 pools keep
// attention.cuh's wgmma tiles.
#pragma once

#include "backend/cuda/kernels/attention_common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Register budgets after setmaxnreg. The warpgroups trade within the CTA's own allocation, 168
// per thread at launch (65,536 / 384, rounded down to a multiple of 8), not the whole register
// file: consumers that ask for more than the producer gave back wait in setmaxnreg.inc forever.
constexpr int kWsLaunchRegs = 168;
constexpr int kWsProducerRegs = 56;
constexpr int kWsConsumerRegs = 224;
static_assert(kWsProducerRegs + 2 * kWsConsumerRegs <= 3 * kWsLaunchRegs,
              "setmaxnreg.inc would wait for registers no warpgroup releases");
static_assert(kWsLaunchRegs * kWsThreads <= 65536 && kWsLaunchRegs % 8 == 0);

// The kernel's named barriers (0 is __syncthreads): the producer's gathered pool rows (128
// threads); each consumer warpgroup's key positions (128, two ids); both consumer warpgroups'
// queries (256); each consumer warpgroup's turn to issue its products (256, two ids).
enum WsBarrier : int {
  kWsBarGather = 1,
  kWsBarPositions = 2,  // + the consumer warpgroup
  kWsBarQueries = 4,
  kWsBarTurn = 5,  // + the consumer warpgroup
};
static_assert(kWsBarTurn + 1 < 16, "16 named barriers per CTA");

template <int D>
__global__ void __launch_bounds__(kWsThreads, 1)
    prefill_ws_kernel(const __grid_constant__ AttnParams p,
                      const __grid_constant__ WsTmaMaps maps) {
  griddep_wait();
  griddep_launch_dependents();
#ifndef LSERVE_WGMMA
  __trap();  // the host launches it only on sm_90 devices (wgmma, setmaxnreg)
#else
  constexpr int BM = kPrefillRows;  // two consumer warpgroups x 64 rows
  constexpr int BN = kWsKeyTile;
  constexpr int SK = kWsKStages, SV = kWsVStages;
  constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
  constexpr int NT = BN / 8;     // score n-tiles of a consumer warp
  constexpr int DT = D / 8;      // output n-tiles
  static_assert(BM == 128, "two consumer warpgroups of 64 rows");
  static_assert(BN == 128, "one producer thread per key of a tile");
  constexpr WsSmem sm = ws_smem(D);

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* base = smem_raw + (1024 - smem_addr(smem_raw) % 1024) % 1024;
  bf16* qs = reinterpret_cast<bf16*>(base);                    // [BM][D]
  bf16* ks = reinterpret_cast<bf16*>(base + sm.ks);            // [SK][BN][D]
  bf16* vs = reinterpret_cast<bf16*>(base + sm.vs);            // [SV][BN][D]
  int32_t* cpos = reinterpret_cast<int32_t*>(base + sm.cpos);  // [2][2][BN] positions (-1: none)
  int32_t* krow = reinterpret_cast<int32_t*>(base + sm.krow);  // [slots][BN] pool rows, -1: none
  uint64_t* full_k = reinterpret_cast<uint64_t*>(base + sm.bars);  // [SK]
  uint64_t* empty_k = full_k + SK;                                 // [SK]
  uint64_t* full_v = empty_k + SK;                                 // [SV]
  uint64_t* empty_v = full_v + SV;                                 // [SV]
  int32_t* list = reinterpret_cast<int32_t*>(base + sm.list);      // [max_sel + 2]

  AttnWork w;
  if (!cta_work(p, &w)) return;
  const SeqInfo s = p.step.seqs[w.seq];
  const int tid = threadIdx.x, lane = tid % 32;
  // The warpgroup, through a shuffle so the compiler knows it is warp-uniform (wgmma in a path it
  // thinks divergent gets serialised).
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int32_t rows = w.q_count * w.rg;
  const bool streaming = w.kind == kStreamPages;

  const KeyTiles<BN> tiles(w, work_key_map(p, w, s, list));
  const int32_t n_tiles = tiles.n_tiles;

  if (tid == 0) {
    for (int i = 0; i < SK; ++i) {
      mbar_init(&full_k[i], 128);  // the producer's threads (and their copies)
      mbar_init(&empty_k[i], 8);   // the consumers' warps
    }
    for (int i = 0; i < SV; ++i) {
      mbar_init(&full_v[i], 128);
      mbar_init(&empty_v[i], 8);
    }
  }
  // The consumers load the queries while the producer starts on the first tiles.
  if (wg > 0) {
    load_query_tile<D, BM>(p, w, s, qs, tid - 128, kWsThreads - 128);
    cp_async_commit();
  }
  __syncthreads();  // publishes the barriers' initialisation

  if (wg == 0) {
    // Producer. Step t loads K of tile t, then V of tile t - 1: the consumers issue S of tile t
    // with P V of tile t - 1, so K runs a tile ahead of V and never queues behind a V stage.
    // A K stage of tile t is free once the consumers released tile t - SK (parity trick: a fresh
    // barrier's "previous phase" counts as complete, so the first SK waits pass); V likewise.
    // No thread waits for its copies: each arrives on the stage's "full" barrier, through
    // cp.async.mbarrier.arrive (which fires once its copies have landed) where it gathered keys.
    setmaxnreg_dec<kWsProducerRegs>();
    const KvPoolView pool = p.kv.pool(streaming);
    const auto* kpool = static_cast<const bf16*>(pool.k);
    const auto* vpool = static_cast<const bf16*>(pool.v);
    const int32_t hs = p.kv.head_slot[w.kv_head];
    const int R = maps.box_rows;  // 0: every key by cp.async
    const int n_boxes = R > 0 ? BN / R : 0;
    const int box_shift = R > 0 ? __ffs(R) - 1 : 31;
    const uint32_t all_boxes = R > 0 ? (1u << n_boxes) - 1 : ~0u;  // 16 boxes at most
    const CUtensorMap* kmap = &maps.k[streaming ? 1 : 0];
    const CUtensorMap* vmap = &maps.v[streaming ? 1 : 0];
    const KeyMap& km = tiles.km;
    // A tile's boxes are worked out per box, not per key: lane b looks up box b's first key
    // (its page-table read) and last key's position. The box is whole (all R keys present at
    // consecutive rows of one page) when both ends exist, lie R - 1 positions apart and share a
    // page: on dense, streaming and selected-page items a key's slot in its page is its index's
    // slot, so such ends come from one entry of the page list; a kept-block box spans at most
    // two blocks (R <= kKeptBlockKeys) and passes only if they are adjacent. No key between two
    // present ends can be missing (every existence test is monotone in the key index). The bits
    // depend on positions only, not on page-table values, so every producer warp computes the
    // same ones and branches on them are uniform over the warpgroup without a barrier.
    static_assert(kKeptBlockKeys % BN == 0, "a box never spans more than two kept blocks");
    struct Box {
      KeyLoc first;
      bool whole;
    };
    auto locate_box = [&](int32_t t) {
      Box bx{{-1, 0}, false};
      if (lane < n_boxes) {
        const int j = lane * R;
        bx.first = tiles.locate(t, j);
        const int32_t last = tiles.position(t, j + R - 1);
        bx.whole = bx.first.pos >= 0 && last - bx.first.pos == R - 1 &&
                   km.page_of(last) == km.page_of(bx.first.pos);
      }
      return bx;
    };
    // Tile t into a stage: the whole boxes by TMA (warp 0: lane 0 adds their bytes to the
    // "full" barrier, then issues each box's loads, one per 64 columns), any other keys (a
    // page cut by the end of the item's keys, page sizes without boxes) gathered by cp.async,
    // zeros for none. box_row: this lane's box's first pool row.
    int32_t gathers = 0;
    auto copy = [&](int32_t t, uint32_t boxes, int32_t box_row, bf16* dst, const bf16* src,
                    const CUtensorMap* map, uint64_t* full) {
      if (boxes != 0 && tid < 32) {
        if (lane == 0) mbar_expect_tx(full, __popc(boxes) * R * D * 2);
        for (int b = 0; b < n_boxes; ++b) {
          const int32_t row = __shfl_sync(0xffffffffu, box_row, b);
          if (lane != 0 || !((boxes >> b) & 1)) continue;
#pragma unroll
          for (int h = 0; h < D / 64; ++h) {
            tma_load_2d(dst + h * BN * 64 + b * R * 64, map, h * 64, row, full);
          }
        }
      }
      if (boxes == all_boxes) {  // the usual tile: no per-key work at all
        mbar_arrive(full);
        return;
      }
      // Each key's pool row, shared so that 16 lanes copy a row's 256 bytes together. Two slots:
      // a slot is rewritten only after the next gather's barrier, which its readers have passed.
      int32_t* rows_of = krow + (gathers++ % kWsRowSlots) * BN;
      const KeyLoc loc = tiles.locate(t, tid);
      rows_of[tid] = loc.pos >= 0 ? loc.row(km, pool.n, hs) : -1;
      named_barrier_sync(kWsBarGather, 128);
#pragma unroll 4
      for (int idx = tid; idx < BN * CHUNKS; idx += 128) {
        const int j = idx / CHUNKS, c = idx % CHUNKS;
        if ((boxes >> (j >> box_shift)) & 1) continue;
        const int64_t row = rows_of[j];
        cp_async_16(dst + tile_offset<BN>(j, c * 8), src + max(row, 0L) * D + c * 8, row >= 0);
      }
      cp_async_arrive(full);
    };
    Box next{{-1, 0}, false};
    if (n_tiles > 0) next = locate_box(0);
    uint32_t v_boxes = 0;  // tile t - 1's boxes and this lane's box row
    int32_t v_row = 0;
    for (int32_t t = 0; t <= n_tiles; ++t) {
      uint32_t k_boxes = 0;
      int32_t k_row = 0;
      if (t < n_tiles) {
        k_boxes = __ballot_sync(0xffffffffu, next.whole);
        k_row = next.first.row(km, pool.n, hs);
        if (t + 1 < n_tiles) next = locate_box(t + 1);  // its page read in flight meanwhile
        mbar_wait(&empty_k[t % SK], ((t / SK) & 1) ^ 1);
        copy(t, k_boxes, k_row, ks + (t % SK) * BN * D, kpool, kmap, &full_k[t % SK]);
      }
      if (t > 0) {
        const int32_t u = t - 1;
        mbar_wait(&empty_v[u % SV], ((u / SV) & 1) ^ 1);
        copy(u, v_boxes, v_row, vs + (u % SV) * BN * D, vpool, vmap, &full_v[u % SV]);
      }
      v_boxes = k_boxes;
      v_row = k_row;
    }
    cp_async_wait_all();  // nothing in flight when the thread exits
    return;
  }

  // Consumers: warpgroup cw holds rows 64 cw ..; warp wi of it rows 16 wi ...
  setmaxnreg_inc<kWsConsumerRegs>();
  cp_async_wait<0>();
  fence_proxy_async();                     // the queries' writes before wgmma reads them
  named_barrier_sync(kWsBarQueries, 256);  // both consumer warpgroups' query rows are in
  const int cw = wg - 1, wi = (tid / 32) % 4;
  int32_t qpos[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * cw + 16 * wi + lane / 4 + 8 * h;
    qpos[h] = r < rows ? s.start_pos + w.q_first + r / w.rg : -1;
  }
  // The earliest and latest positions among the warpgroup's rows (the same for all its threads,
  // so the whole-tile test and the barrier under it are warpgroup-uniform). A warpgroup of
  // padding rows only computes what is never written.
  const int32_t wg_qmin = 64 * cw < rows ? s.start_pos + w.q_first + 64 * cw / w.rg : INT32_MAX;
  const int32_t wg_qmax = s.start_pos + w.q_first + (min(64 * cw + 63, rows - 1)) / w.rg;
  const int32_t window = s.stream_window;
  const WholeTiles whole_tile = tiles.whole_tiles(wg_qmin, wg_qmax, p.sink, window);
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float sc[NT][4];
  uint32_t pa[BN / 16][4];  // the previous tile's probabilities, A fragments of P V

  // O += P V of tile t (its V stage waited for), issued as one wgmma group.
  auto issue_pv = [&](int32_t t) {
    const int st = t % SV;
    mbar_wait(&full_v[st], (t / SV) & 1);
    fence_proxy_async();  // the copies' writes, seen through the barrier, before wgmma reads
    wgmma_pv_issue<D, BN>(o, pa, vs + st * BN * D);
  };
  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };

  // S = Q K^T of tile t (its K stage waited for), issued as one wgmma group.
  auto issue_qk = [&](int32_t t) {
    const int st = t % SK;
    mbar_wait(&full_k[st], (t / SK) & 1);
    fence_proxy_async();
    wgmma_qk_issue<D, BM, BN>(sc, qs, ks + st * BN * D, cw);
  };
  // Whether tile t needs its mask; if so, the warpgroup's key positions of it, one per thread,
  // into the next of two slots (alternating over masked tiles). Two slots: a warp past one masked
  // tile's barrier writes the next one's while others still read the first; a slot is reused
  // only after the next masked tile's barrier, which every reader of it has passed.
  int32_t* my_pos = cpos + 2 * cw * BN;
  int32_t masked = 0;
  auto prepare_mask = [&](int32_t t) {
    const bool whole = whole_tile(t);
    if (!whole) my_pos[(masked % 2) * BN + tid % 128] = tiles.position(t, tid % 128);
    return whole;
  };
  // Tile t's scores (retired): its K stage released, masked, the softmax state advanced.
  auto softmax = [&](bool whole, float(&alpha)[2], int32_t t) {
    wgmma_fence_operand(sc);
    release(&empty_k[t % SK]);  // the scores are in registers
    if (!whole) {
      named_barrier_sync(kWsBarPositions + cw, 128);  // the warpgroup's positions of tile t
      mask_scores<NT>(sc, my_pos + (masked % 2) * BN, qpos, streaming, p.sink, window, lane);
      ++masked;
    }
    online_softmax<NT>(sc, m, l, p.scale_log2, alpha);
  };

  // Ping-pong (FlashAttention-3's schedule between warpgroups): in the steady loop the two
  // warpgroups take turns issuing their products, so that one's softmax runs while the other's
  // products hold the tensor cores. Barrier kWsBarTurn + cw is warpgroup cw's turn (both
  // warpgroups count: one waits, the other arrives). Warpgroup 0 takes its first turn unasked and
  // warpgroup 1 passes no turn after its last, so every arrival is waited for.
  auto take_turn = [&](int32_t t) {
    if (cw == 1 || t > 1) named_barrier_sync(kWsBarTurn + cw, 256);
  };
  auto pass_turn = [&](int32_t t) {
    if (cw == 0 || t + 1 < n_tiles) named_barrier_arrive(kWsBarTurn + 1 - cw, 256);
  };

  // Tile 0 alone, then every further tile with the previous one's P V in flight (no wgmma in a
  // branch: the compiler would serialise them all).
  if (n_tiles > 0) {
    float alpha[2];
    bool whole = prepare_mask(0);
    issue_qk(0);
    wgmma_wait<0>();
    softmax(whole, alpha, 0);  // o is still 0: nothing to rescale
    pack_probs<BN>(sc, pa);
    for (int32_t t = 1; t < n_tiles; ++t) {
      whole = prepare_mask(t);
      take_turn(t);
      issue_qk(t);
      issue_pv(t - 1);
      pass_turn(t);
      wgmma_wait<1>();  // S of tile t is in; P V of tile t - 1 may still run
      softmax(whole, alpha, t);
      wgmma_wait<0>();
      wgmma_fence_operand(o);
      wgmma_fence_operand(pa);
      release(&empty_v[(t - 1) % SV]);
      rescale_output<DT>(o, alpha[0], alpha[1]);
      pack_probs<BN>(sc, pa);
    }
    issue_pv(n_tiles - 1);
    wgmma_wait<0>();
    wgmma_fence_operand(o);
    wgmma_fence_operand(pa);
  }

  // Row sums over the quad that shares each row, then the normalised rows.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * cw + 16 * wi + lane / 4 + 8 * h;
    if (r >= rows) continue;
    const float inv = l[h] > 0.0f ? 1.0f / l[h] : 0.0f;
    const int64_t token = s.q_offset + w.q_first + r / w.rg;
    bf16* dst = p.out + (token * p.n_heads + w.head0 + r % w.rg) * D;
#pragma unroll
    for (int nd = 0; nd < DT; ++nd) {
      *reinterpret_cast<__nv_bfloat162*>(dst + nd * 8 + 2 * (lane % 4)) =
          __floats2bfloat162_rn(o[nd][2 * h] * inv, o[nd][2 * h + 1] * inv);
    }
  }
#endif  // LSERVE_WGMMA
}

}  // namespace lserve::cuda
