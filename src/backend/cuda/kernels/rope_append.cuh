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
  const int32_t n_pool = retrieval ? p.kv.n_ret : p.kv.n_str;
  bf16* kdst = retrieval ? p.kv.k_ret : p.kv.k_str;
  bf16* vdst = retrieval ? p.kv.v_ret : p.kv.v_str;
  for (int32_t idx = threadIdx.x; idx < n_tok * d; idx += blockDim.x) {
    const int32_t tok = idx / d, c = idx % d;
    const int32_t pos = g.pos_begin + tok;
    const int64_t t = s.q_offset + (pos - s.start_pos);
    const int32_t block = pos / P;
    const int32_t page =
        retrieval ? p.step.page_indices[s.page_base + block] : stream_page(p.step, s, block);
    const int64_t row = (static_cast<int64_t>(page) * n_pool + hs) * P + pos % P;
    kdst[row * d + c] = p.k[t * k_stride + static_cast<int64_t>(h) * d + c];
    vdst[row * d + c] = p.v[t * k_stride + static_cast<int64_t>(h) * d + c];
  }
  // One-token logical pages keep no bounds: kmin and kmax are the key pool itself (KvCache).
  if (!retrieval || p.kv.logical_page_size == 1) return;

  // 3. This logical page's key bounds: from its first token, or widened when the page already
  // held tokens before this step.
  const int32_t L = p.kv.logical_page_size, lpp = P / L;
  const int32_t page = p.step.page_indices[s.page_base + g.pos_begin / P];
  const int64_t srow =
      ((static_cast<int64_t>(page) * p.kv.n_ret + hs) * lpp + (g.pos_begin % P) / L) * d;
  const bool fresh = g.pos_begin % L == 0;
  for (int32_t c = threadIdx.x; c < d; c += blockDim.x) {
    float lo = fresh ? INFINITY : to_f32(p.kv.kmin[srow + c]);
    float hi = fresh ? -INFINITY : to_f32(p.kv.kmax[srow + c]);
    for (int32_t tok = 0; tok < n_tok; ++tok) {
      const int64_t t = s.q_offset + (g.pos_begin + tok - s.start_pos);
      const float x = to_f32(p.k[t * k_stride + static_cast<int64_t>(h) * d + c]);
      lo = fminf(lo, x);
      hi = fmaxf(hi, x);
    }
    p.kv.kmin[srow + c] = to_bf16(lo);
    p.kv.kmax[srow + c] = to_bf16(hi);
  }
}

}  // namespace lserve::cuda
