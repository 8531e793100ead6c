// The CPU backend's KV ops: RoPE + append into pages (with key statistics) and paged attention.
#include <cmath>
#include <limits>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/vec.h"
#include "kv/kv_cache.h"

namespace lserve {
namespace {

// Sequences with at most this many new tokens read K/V in place instead of gathering for GEMMs.
constexpr int kDirectQueryRows = 4;

std::vector<float> inverse_frequencies(const RopeParams& rope, int head_dim) {
  std::vector<float> inv(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    inv[i] = static_cast<float>(std::pow(static_cast<double>(rope.theta), -2.0 * i / head_dim));
    if (rope.freq_factors != nullptr) inv[i] /= rope.freq_factors[i];
  }
  return inv;
}

void rotate(float* x, int head_dim, int32_t pos, const std::vector<float>& inv, bool half_split) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv[i];
    const float c = std::cos(angle), s = std::sin(angle);
    float* a = half_split ? &x[i] : &x[2 * i];
    float* b = half_split ? &x[i + half] : &x[2 * i + 1];
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
  }
}

}  // namespace

void CpuBackend::rope_append_kv(int layer, Tensor& q, Tensor& k, const Tensor& v,
                                const RopeParams& rope, const StepPlan& plan, KvCache& cache) {
  const int d = cache.config().head_dim;
  const int hq = static_cast<int>(q.cols / d), hkv = static_cast<int>(k.cols / d);
  LSERVE_ASSERT(q.rows == plan.n_tokens() && k.rows == q.rows && v.cols == k.cols);
  const auto inv = inverse_frequencies(rope, d);
  pool_.parallel_for(q.rows, [&](int64_t t) {
    const int32_t pos = plan.positions[t];
    for (int h = 0; h < hq; ++h) rotate(q.as<float>() + t * q.cols + h * d, d, pos, inv, rope.half_split);
    for (int h = 0; h < hkv; ++h) rotate(k.as<float>() + t * k.cols + h * d, d, pos, inv, rope.half_split);
  });

  const HeadMap& heads = cache.heads();
  LSERVE_CHECK(heads.count(layer, HeadClass::kStreaming) == 0,
               "streaming heads are not supported by this KV path yet");
  const int P = cache.page_size();
  const int L = cache.config().logical_page_size;
  const int lpp = cache.logical_pages_per_page();
  const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
  float* kdst = cache.k(HeadClass::kRetrieval, layer).as<float>();
  float* vdst = cache.v(HeadClass::kRetrieval, layer).as<float>();
  float* kmin = cache.kmin(layer).as<float>();
  float* kmax = cache.kmax(layer).as<float>();
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    const int32_t* pages = plan.pages_of(s);
    for (int32_t i = 0; i < seq.q_len; ++i) {
      const int64_t t = seq.q_offset + i;
      const int32_t pos = seq.start_pos + i;
      LSERVE_ASSERT(pos / P < plan.num_pages_of(s));
      const int64_t page = pages[pos / P];
      const int slot = pos % P;
      for (int h = 0; h < hkv; ++h) {
        const int hs = heads.slot[layer][h];
        const int64_t row = (page * nr + hs) * P + slot;
        const float* ksrc = k.as<float>() + t * k.cols + h * d;
        std::memcpy(kdst + row * d, ksrc, d * sizeof(float));
        std::memcpy(vdst + row * d, v.as<float>() + t * v.cols + h * d, d * sizeof(float));
        // Bounds of a logical page start from its first token, never from stale memory.
        const int64_t srow = ((page * nr + hs) * lpp + slot / L) * d;
        if (slot % L == 0) {
          std::memcpy(kmin + srow, ksrc, d * sizeof(float));
          std::memcpy(kmax + srow, ksrc, d * sizeof(float));
        } else {
          for (int c = 0; c < d; ++c) {
            kmin[srow + c] = std::min(kmin[srow + c], ksrc[c]);
            kmax[srow + c] = std::max(kmax[srow + c], ksrc[c]);
          }
        }
      }
    }
  }
}

void CpuBackend::attention(int layer, const Tensor& q, const StepPlan& plan, KvCache& cache,
                           Tensor& out) {
  const int d = cache.config().head_dim;
  const int hq = static_cast<int>(q.cols / d);
  const int hkv = cache.config().n_kv_heads;
  const int group = hq / hkv;
  const int P = cache.page_size();
  const HeadMap& heads = cache.heads();
  const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
  const float* kc = cache.k(HeadClass::kRetrieval, layer).as<float>();
  const float* vc = cache.v(HeadClass::kRetrieval, layer).as<float>();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));

  std::vector<float> kbuf, vbuf;
  std::vector<int32_t> kpos;
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    const int32_t ctx = seq.end_pos();
    const int32_t* pages = plan.pages_of(s);
    auto key_row = [&](int hs, int32_t j) { return (static_cast<int64_t>(pages[j / P]) * nr + hs) * P + j % P; };

    if (seq.q_len <= kDirectQueryRows) {
      // Few queries (decode): read K/V straight from the pages, one task per (query, KV head)
      // so the group's query heads share each key and value row.
      pool_.parallel_for(static_cast<int64_t>(seq.q_len) * hkv, [&](int64_t task) {
        const int i = static_cast<int>(task / hkv), h = static_cast<int>(task % hkv);
        const int hs = heads.slot[layer][h];
        const int32_t pos = seq.start_pos + i;
        const float* qv = q.as<float>() + static_cast<int64_t>(seq.q_offset + i) * q.cols + h * group * d;
        std::vector<float> sc(static_cast<size_t>(group) * (pos + 1));
        std::vector<float> mx(group, -std::numeric_limits<float>::infinity());
        for (int32_t j = 0; j <= pos; ++j) {
          const float* kr = kc + key_row(hs, j) * d;
          for (int g = 0; g < group; ++g) {
            const float dot = vec::dot(qv + g * d, kr, d) * scale;
            sc[static_cast<size_t>(g) * (pos + 1) + j] = dot;
            mx[g] = std::max(mx[g], dot);
          }
        }
        std::vector<float> acc(static_cast<size_t>(group) * d, 0.0f);
        std::vector<double> sum(group, 0.0);
        for (int32_t j = 0; j <= pos; ++j) {
          const float* vr = vc + key_row(hs, j) * d;
          for (int g = 0; g < group; ++g) {
            const float p = std::exp(sc[static_cast<size_t>(g) * (pos + 1) + j] - mx[g]);
            sum[g] += p;
            vec::axpy(p, vr, &acc[static_cast<size_t>(g) * d], d);
          }
        }
        float* o = out.as<float>() + static_cast<int64_t>(seq.q_offset + i) * out.cols + h * group * d;
        for (int g = 0; g < group; ++g) {
          const auto inv = static_cast<float>(1.0 / sum[g]);
          for (int c = 0; c < d; ++c) o[g * d + c] = acc[g * d + c] * inv;
        }
      });
      continue;
    }

    // Many queries (prefill): gather each head's K/V into contiguous rows, then GEMM tiles.
    kbuf.resize(static_cast<size_t>(ctx) * d);
    vbuf.resize(static_cast<size_t>(ctx) * d);
    kpos.resize(ctx);
    for (int32_t j = 0; j < ctx; ++j) kpos[j] = j;
    for (int h = 0; h < hkv; ++h) {
      const int hs = heads.slot[layer][h];
      pool_.parallel_for((ctx + P - 1) / P, [&](int64_t pi) {
        const int32_t first = static_cast<int32_t>(pi) * P;
        const int32_t n = std::min<int32_t>(P, ctx - first);
        const int64_t src = key_row(hs, first) * d;
        std::memcpy(&kbuf[static_cast<size_t>(first) * d], kc + src, static_cast<size_t>(n) * d * sizeof(float));
        std::memcpy(&vbuf[static_cast<size_t>(first) * d], vc + src, static_cast<size_t>(n) * d * sizeof(float));
      });
      for (int g = 0; g < group; ++g) {
        const int qh = h * group + g;
        AttendArgs a;
        a.q = q.as<float>() + static_cast<int64_t>(seq.q_offset) * q.cols + qh * d;
        a.q_stride = q.cols;
        a.q_pos = plan.positions.data() + seq.q_offset;
        a.nq = seq.q_len;
        a.k = kbuf.data();
        a.v = vbuf.data();
        a.k_pos = kpos.data();
        a.nk = ctx;
        a.head_dim = d;
        a.scale = scale;
        a.out = out.as<float>() + static_cast<int64_t>(seq.q_offset) * out.cols + qh * d;
        a.out_stride = out.cols;
        attend(a, pool_);
      }
    }
  }
}

}  // namespace lserve
