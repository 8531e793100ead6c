// RoPE fused with the KV append and the page-statistics update. One CTA per (append group, KV
// head): a group is the new tokens of one sequence inside one logical page, so the CTA that
// writes those keys also owns that logical page's kmin/kmax (no atomics, no races), and rotates
// the group's query heads for the same tokens.
#pragma once

#include "backend/cuda/kernels/common.cuh"
#include "backend/cuda/kernels/params.h"

namespace lserve::cuda {

// Page of block `block` of sequence `s` in the streaming pool (sink pages, then window pages).
__device__ __forceinline__ int32_t stream_page(const DeviceStep& st, const SeqInfo& s,
                                               int32_t block) {
  const int32_t li =
      block < s.stream_sink_blocks ? block : s.stream_sink_blocks + (block - s.stream_window_first);
  return st.stream_indices[s.stream_base + li];
}

// FP8 rows (kv/kv_dtype.h): per (token, K or V) row, scale = max|x| / 448 (1 for an all-zero or
// non-finite row), element = e4m3(x / scale), as the CPU's round_kv_row computes them. One warp
// per row: each lane holds up to 8 of its values (head_dim <= 256).
template <typename RowFn, typename SrcFn>
__device__ __forceinline__ void append_fp8_rows(const KvPoolView& pool, int32_t n_tok, int32_t d,
                                                RowFn pool_row, SrcFn src_row, int32_t pos0) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
  for (int32_t r = warp; r < 2 * n_tok; r += n_warps) {
    const int32_t tok = r / 2;
    const bool value = r % 2 == 1;
    const bf16* src = src_row(tok, value);
    float x[8];
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t c = lane + 32 * i;
      x[i] = c < d ? to_f32(src[c]) : 0.0f;
      amax = fmaxf(amax, fabsf(x[i]));
    }
    amax = warp_reduce(amax, MaxOp{});
    const float scale = amax > 0.0f && isfinite(amax) ? amax / 448.0f : 1.0f;
    const int64_t row = pool_row(pos0 + tok);
    uint8_t* dst = static_cast<uint8_t*>(value ? pool.v : pool.k) + row * d;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int32_t c = lane + 32 * i;
      if (c < d) dst[c] = f32_to_e4m3(x[i] / scale);
    }
    if (lane == 0) (value ? pool.v_scale : pool.k_scale)[row] = scale;
  }
}

// groups == null (a device-planned decode step): CTA x takes sequence slot x's one new token.
__global__ void rope_append_kernel(RopeAppendParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int32_t seq = p.groups ? p.groups[blockIdx.x].seq : static_cast<int32_t>(blockIdx.x);
  const SeqInfo s = p.step.seqs[seq];
  const AppendGroup g =
      p.groups ? p.groups[blockIdx.x] : AppendGroup{seq, s.start_pos, s.start_pos + s.q_len, 0};
  if (g.pos_end <= g.pos_begin) return;  // a padding slot
  const int32_t h = blockIdx.y;
  const int32_t d = p.kv.head_dim, half = d / 2;
  const int32_t group = p.n_heads / p.n_kv_heads;
  const int32_t n_tok = g.pos_end - g.pos_begin;
  const int64_t q_stride = static_cast<int64_t>(p.n_heads) * d;
  const int64_t k_stride = static_cast<int64_t>(p.n_kv_heads) * d;

  // 1. Rotate this KV head's query heads and its key for every token of the group. cos and sin
  // of each (token, frequency) are computed once and shared by the group + 1 heads: sincosf
  // takes its slow path (with a local-memory table) for the large angles of long contexts.
  constexpr int kTok = 8;
  __shared__ float2 rot[kTok][kRopeMaxHalf];
  const int32_t per_token = (group + 1) * half;
  for (int32_t t0 = 0; t0 < n_tok; t0 += kTok) {
    const int32_t nt = min(kTok, n_tok - t0);
    for (int32_t idx = threadIdx.x; idx < nt * half; idx += blockDim.x) {
      const int32_t tok = idx / half, i = idx % half;
      float sn, cs;
      sincosf(static_cast<float>(g.pos_begin + t0 + tok) * p.inv_freq[i], &sn, &cs);
      rot[tok][i] = make_float2(cs * p.attention_factor, sn * p.attention_factor);
    }
    __syncthreads();
    for (int32_t idx = threadIdx.x; idx < nt * per_token; idx += blockDim.x) {
      const int32_t tok = idx / per_token, rem = idx % per_token;
      const int32_t hh = rem / half, i = rem % half;
      const int64_t t = s.q_offset + (g.pos_begin + t0 + tok - s.start_pos);
      bf16* x = hh < group ? p.q + t * q_stride + static_cast<int64_t>(h * group + hh) * d
                           : p.k + t * k_stride + static_cast<int64_t>(h) * d;
      const float cs = rot[tok][i].x, sn = rot[tok][i].y;
      const int32_t a = p.half_split ? i : 2 * i, b = p.half_split ? i + half : 2 * i + 1;
      const float x0 = to_f32(x[a]), x1 = to_f32(x[b]);
      x[a] = to_bf16(x0 * cs - x1 * sn);
      x[b] = to_bf16(x0 * sn + x1 * cs);
    }
    __syncthreads();
  }

  // 2. Write the rotated keys and the values into this head's pool.
  const bool retrieval = p.kv.head_class[h] == 0;
  const int32_t hs = p.kv.head_slot[h];
  const int32_t P = p.kv.page_size;
  const KvPoolView pool = p.kv.pool(!retrieval);
  auto pool_row = [&](int32_t pos) {
    const int32_t block = pos / P;
    const int32_t page =
        retrieval ? p.step.page_indices[s.page_base + block] : stream_page(p.step, s, block);
    return (static_cast<int64_t>(page) * pool.n + hs) * P + pos % P;
  };
  auto src_row = [&](int32_t tok, bool value) {
    const int64_t t = s.q_offset + (g.pos_begin + tok - s.start_pos);
    return (value ? p.v : p.k) + t * k_stride + static_cast<int64_t>(h) * d;
  };
  if (p.kv.fp8) {
    append_fp8_rows(pool, n_tok, d, pool_row, src_row, g.pos_begin);
  } else {
    for (int32_t idx = threadIdx.x; idx < n_tok * d; idx += blockDim.x) {
      const int32_t tok = idx / d, c = idx % d;
      const int64_t row = pool_row(g.pos_begin + tok);
      static_cast<bf16*>(pool.k)[row * d + c] = src_row(tok, false)[c];
      static_cast<bf16*>(pool.v)[row * d + c] = src_row(tok, true)[c];
    }
  }
  // One-token logical pages keep no bounds: kmin and kmax are the key pool itself (KvCache).
  if (!retrieval || p.kv.logical_page_size == 1) return;

  // 3. This logical page's key bounds: from its first token, or widened when the page already
  // held tokens before this step. They bound the stored keys, so with fp8 the rounded values are
  // read back (this CTA wrote them; the barrier makes them visible).
  if (p.kv.fp8) __syncthreads();
  const int32_t L = p.kv.logical_page_size, lpp = P / L;
  const int32_t page = p.step.page_indices[s.page_base + g.pos_begin / P];
  const int64_t srow =
      ((static_cast<int64_t>(page) * p.kv.n_ret + hs) * lpp + (g.pos_begin % P) / L) * d;
  const bool fresh = g.pos_begin % L == 0;
  for (int32_t c = threadIdx.x; c < d; c += blockDim.x) {
    float lo = fresh ? INFINITY : to_f32(p.kv.kmin[srow + c]);
    float hi = fresh ? -INFINITY : to_f32(p.kv.kmax[srow + c]);
    for (int32_t tok = 0; tok < n_tok; ++tok) {
      float x;
      if (p.kv.fp8) {
        const int64_t row = pool_row(g.pos_begin + tok);
        x = e4m3_to_f32(static_cast<const uint8_t*>(pool.k)[row * d + c]) * pool.k_scale[row];
      } else {
        x = to_f32(src_row(tok, false)[c]);
      }
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    p.kv.kmin[srow + c] = to_bf16(lo);
    p.kv.kmax[srow + c] = to_bf16(hi);
  }
}

}  // namespace lserve::cuda
