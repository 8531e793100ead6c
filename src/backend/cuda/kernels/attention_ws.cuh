// Warp-specialised prefill attention for Hopper (sm_90a), bf16 pools: the same work items, key
// ranges and masks as attention.cuh's prefill tiles (128 rows: a GQA group's heads of up to 128
// queries), with the roles split (FlashAttention-3's structure, written for the paged pools):
//
// - Producer warpgroup (warps 0-3, 56 registers): per 128-key tile, one thread per key looks up
//   its page (the page-table read is issued a tile ahead), writes the key's position to shared
//   memory, and the warpgroup gathers the K rows and then the V rows with cp.async into
//   128-byte-swizzled stages (coalesced: 16 lanes per 256-byte row). Each stage's K and V have
//   their own "full" mbarrier, on which each producer thread arrives once its copies have landed,
//   and their own "empty" one that the consumers arrive on.
// - Two consumer warpgroups (224 registers), 64 rows each: S = Q K^T (wgmma m64n128k16, both
//   operands in shared memory), then, while that runs, O += P V of the previous tile (wgmma with
//   P from registers); the softmax of tile t (mask, row maxima, exponentials) runs while
//   P V of tile t - 1 is still on the tensor cores, and only the output's rescale waits for it.
//   K's stage is released as soon as its scores are read, V's once its product is retired.
//
// Pages need not be contiguous (streaming heads' sink + window, selected pages), so the K/V tiles
// are gathered key by key rather than loaded by TMA; keys that do not exist (past the sequence,
// past a selection) are zero-filled and masked. FP8 pools keep attention.cuh's wgmma tiles.
#pragma once

#include "backend/cuda/kernels/attention_common.cuh"
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/wgmma.cuh"

namespace lserve::cuda {

// Register budgets after setmaxnreg: 56 + 2 x 224 <= 512 per thread slot of the three
// warpgroups (65,536 registers / 128 threads), so one CTA of 384 threads fits an SM.
constexpr int kWsProducerRegs = 56;
constexpr int kWsConsumerRegs = 224;

template <int D>
__global__ void __launch_bounds__(kWsThreads, 1) prefill_ws_kernel(AttnParams p) {
  griddep_wait();
  griddep_launch_dependents();
#ifndef LSERVE_WGMMA
  __trap();  // the host launches it only on sm_90 devices (wgmma, setmaxnreg)
#else
  constexpr int BM = kPrefillRows;  // two consumer warpgroups x 64 rows
  constexpr int BN = kWsKeyTile;
  constexpr int S = kWsStages;
  constexpr int CHUNKS = D / 8;  // 16-byte chunks per row
  constexpr int NT = BN / 8;     // score n-tiles of a consumer warp
  constexpr int DT = D / 8;      // output n-tiles
  static_assert(BM == 128, "two consumer warpgroups of 64 rows");
  static_assert(BN == 128, "one producer thread per key of a tile");
  constexpr WsSmem sm = ws_smem(D);

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* base = smem_raw + (1024 - smem_addr(smem_raw) % 1024) % 1024;
  bf16* qs = reinterpret_cast<bf16*>(base);                    // [BM][D]
  bf16* ks = reinterpret_cast<bf16*>(base + sm.ks);            // [S][BN][D]
  bf16* vs = reinterpret_cast<bf16*>(base + sm.vs);            // [S][BN][D]
  int32_t* kpos = reinterpret_cast<int32_t*>(base + sm.kpos);  // [S][BN] key positions (-1: none)
  int32_t* krow = reinterpret_cast<int32_t*>(base + sm.krow);  // [S][BN] pool rows
  uint64_t* full_k = reinterpret_cast<uint64_t*>(base + sm.bars);  // [S] each
  uint64_t* full_v = full_k + S;
  uint64_t* empty_k = full_v + S;
  uint64_t* empty_v = empty_k + S;
  int32_t* list = reinterpret_cast<int32_t*>(base + sm.list);  // [max_sel + 2]

  AttnWork w;
  if (!cta_work(p, &w)) return;
  const SeqInfo s = p.step.seqs[w.seq];
  const int tid = threadIdx.x, lane = tid % 32;
  // The warpgroup, through a shuffle so the compiler knows it is warp-uniform (wgmma in a path it
  // thinks divergent gets serialised).
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  const int32_t rows = w.q_count * w.rg;
  const bool streaming = w.kind == kStreamPages;
  const int32_t P = p.kv.page_size;

  const KeyTiles<BN> tiles(w, work_key_map(p, w, s, list));
  const int32_t n_tiles = tiles.n_tiles;

  if (tid == 0) {
    for (int i = 0; i < S; ++i) {
      mbar_init(&full_k[i], 128);  // the producer's threads (and their copies)
      mbar_init(&full_v[i], 128);
      mbar_init(&empty_k[i], 8);  // the consumers' warps
      mbar_init(&empty_v[i], 8);
    }
  }
  load_query_tile<D, BM>(p, w, s, qs, tid, kWsThreads);
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();  // also publishes the barriers' initialisation

  if (wg == 0) {
    // Producer. Stage st of tile t is free once the consumers released tile t - S (parity trick:
    // a fresh barrier's "previous phase" counts as complete, so the first S waits pass).
    setmaxnreg_dec<kWsProducerRegs>();
    const KvPoolView pool = p.kv.pool(streaming);
    const auto* kpool = static_cast<const bf16*>(pool.k);
    const auto* vpool = static_cast<const bf16*>(pool.v);
    const int32_t hs = p.kv.head_slot[w.kv_head];
    KeyLoc loc{-1, 0};
    if (n_tiles > 0) loc = tiles.locate(0, tid);
    for (int32_t t = 0; t < n_tiles; ++t) {
      const int st = t % S;
      const uint32_t parity = ((t / S) & 1) ^ 1;
      mbar_wait(&empty_k[st], parity);
      kpos[st * BN + tid] = loc.pos;
      krow[st * BN + tid] = loc.row(pool.n, hs, P);
      named_barrier_sync(1, 128);  // every key's row is known to the warpgroup
      if (t + 1 < n_tiles) loc = tiles.locate(t + 1, tid);  // in flight during the copies
      auto copy = [&](bf16* dst, const bf16* src) {
#pragma unroll 4
        for (int idx = tid; idx < BN * CHUNKS; idx += 128) {
          const int j = idx / CHUNKS, c = idx % CHUNKS;
          const int64_t row = krow[st * BN + j];
          cp_async_16(dst + st * BN * D + tile_offset<BN>(j, c * 8), src + row * D + c * 8,
                      kpos[st * BN + j] >= 0);
        }
      };
      // Each thread arrives once its own copies have landed (its arrival releases them to the
      // consumers); K's arrival waits until V's copies are issued, which keeps the two streams of
      // copies in flight together.
      copy(ks, kpool);
      cp_async_commit();
      mbar_wait(&empty_v[st], parity);
      copy(vs, vpool);
      cp_async_commit();
      cp_async_wait<1>();
      mbar_arrive(&full_k[st]);
      cp_async_wait<0>();
      mbar_arrive(&full_v[st]);
    }
    return;
  }

  // Consumers: warpgroup cw holds rows 64 cw ..; warp wi of it rows 16 wi ...
  setmaxnreg_inc<kWsConsumerRegs>();
  const int cw = wg - 1, wi = (tid / 32) % 4;
  int32_t qpos[2];
  int32_t qmin = INT32_MAX;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * cw + 16 * wi + lane / 4 + 8 * h;
    qpos[h] = r < rows ? s.start_pos + w.q_first + r / w.rg : -1;
    qmin = qpos[h] >= 0 ? min(qmin, qpos[h]) : qmin;
  }
  const int32_t window = s.stream_window;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[DT][4];
#pragma unroll
  for (int i = 0; i < DT; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float sc[NT][4];
  uint32_t pa[BN / 16][4];  // the previous tile's probabilities, A fragments of P V

  // O += P V of tile t (its V stage waited for), issued as one wgmma group.
  auto issue_pv = [&](int32_t t) {
    const int st = t % S;
    mbar_wait(&full_v[st], (t / S) & 1);
    fence_proxy_async();  // the copies' writes, seen through the barrier, before wgmma reads
    wgmma_pv_issue<D, BN>(o, pa, vs + st * BN * D);
  };
  auto release = [&](uint64_t* bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };

  // S = Q K^T of tile t (its K stage waited for), issued as one wgmma group.
  auto issue_qk = [&](int32_t t) {
    const int st = t % S;
    mbar_wait(&full_k[st], (t / S) & 1);
    fence_proxy_async();
    wgmma_qk_issue<D, BM, BN>(sc, qs, ks + st * BN * D, cw);
  };
  // Tile t's scores (retired) masked, its K stage released, the softmax state advanced.
  auto softmax = [&](int32_t t, float(&alpha)[2]) {
    wgmma_fence_operand(sc);
    const int st = t % S;
    const int32_t* tpos = kpos + st * BN;
    if (!tile_whole<BN>(tpos, qmin, streaming)) {
      mask_scores<NT>(sc, tpos, qpos, streaming, p.sink, window, lane);
    }
    release(&empty_k[st]);  // scores and positions read
    online_softmax<NT>(sc, m, l, p.scale_log2, alpha);
  };

  // Tile 0 alone, then every further tile with the previous one's P V in flight (no wgmma in a
  // branch: the compiler would serialise them all).
  if (n_tiles > 0) {
    float alpha[2];
    issue_qk(0);
    wgmma_wait<0>();
    softmax(0, alpha);  // o is still 0: nothing to rescale
    pack_probs<BN>(sc, pa);
    for (int32_t t = 1; t < n_tiles; ++t) {
      issue_qk(t);
      issue_pv(t - 1);
      wgmma_wait<1>();  // S of tile t is in; P V of tile t - 1 may still run
      softmax(t, alpha);
      wgmma_wait<0>();
      wgmma_fence_operand(o);
      wgmma_fence_operand(pa);
      release(&empty_v[(t - 1) % S]);
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
