// The CPU backend's KV write path: RoPE, then K/V into the pages of each head's pool, with the
// retrieval pool's per-logical-page key bounds maintained on every append.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "kv/kv_cache.h"

namespace lserve {
namespace {

void rotate(float* x, int head_dim, int32_t pos, const std::vector<float>& inv, bool half_split,
            float factor) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv[i];
    const float c = std::cos(angle) * factor, s = std::sin(angle) * factor;
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
  const auto inv = rope_inverse_frequencies(rope, d);
  pool_.parallel_for(q.rows, [&](int64_t t) {
    const int32_t pos = plan.positions[t];
    for (int h = 0; h < hq; ++h)
      rotate(q.as<float>() + t * q.cols + h * d, d, pos, inv, rope.half_split,
             rope.attention_factor);
    for (int h = 0; h < hkv; ++h)
      rotate(k.as<float>() + t * k.cols + h * d, d, pos, inv, rope.half_split,
             rope.attention_factor);
  });

  const HeadMap& heads = cache.heads();
  const int P = cache.page_size(), L = cache.logical_page_size(),
            lpp = cache.logical_pages_per_page();
  const int nr = cache.layout(HeadClass::kRetrieval).heads_per_layer[layer];
  const int ns = cache.layout(HeadClass::kStreaming).heads_per_layer[layer];
  float* kmin = nr > 0 ? cache.kmin(layer).as<float>() : nullptr;
  float* kmax = nr > 0 ? cache.kmax(layer).as<float>() : nullptr;
  // Rows are stored rounded as the cache's dtype says; the page bounds come from the stored
  // keys, so they bound exactly what attention reads.
  const KvDtype kv_dtype = cache.config().dtype;
  std::vector<float> krow(static_cast<size_t>(d)), vrow(static_cast<size_t>(d));
  for (size_t s = 0; s < plan.seqs.size(); ++s) {
    const SeqStep& seq = plan.seqs[s];
    for (int32_t i = 0; i < seq.q_len; ++i) {
      const int64_t t = seq.q_offset + i;
      const int32_t pos = seq.start_pos + i;
      const int32_t block = pos / P;
      const int slot = pos % P;
      for (int h = 0; h < hkv; ++h) {
        const int hs = heads.slot[layer][h];
        round_kv_row(kv_dtype, k.as<float>() + t * k.cols + h * d, krow.data(), d);
        round_kv_row(kv_dtype, v.as<float>() + t * v.cols + h * d, vrow.data(), d);
        const float* ksrc = krow.data();
        const float* vsrc = vrow.data();
        if (heads.cls[layer][h] == HeadClass::kStreaming) {
          const int32_t page = plan.stream_page(s, block);
          LSERVE_ASSERT(page >= 0);
          const int64_t row = (static_cast<int64_t>(page) * ns + hs) * P + slot;
          std::memcpy(cache.k(HeadClass::kStreaming, layer).as<float>() + row * d, ksrc,
                      d * sizeof(float));
          std::memcpy(cache.v(HeadClass::kStreaming, layer).as<float>() + row * d, vsrc,
                      d * sizeof(float));
          continue;
        }
        LSERVE_ASSERT(block < plan.num_pages_of(s));
        const int64_t page = plan.pages_of(s)[block];
        const int64_t row = (page * nr + hs) * P + slot;
        std::memcpy(cache.k(HeadClass::kRetrieval, layer).as<float>() + row * d, ksrc,
                    d * sizeof(float));
        std::memcpy(cache.v(HeadClass::kRetrieval, layer).as<float>() + row * d, vsrc,
                    d * sizeof(float));
        if (L == 1) continue;  // the bounds are the key pool itself (KvCache)
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

}  // namespace lserve
