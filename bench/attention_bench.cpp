// Attention kernel benchmark on the GPU (Llama-3-8B attention shape: 32 query heads, 8 KV heads,
// head_dim 128, bf16): prefill (dense and 50% streaming heads) and decode (dense paged and sparse:
// 50% streaming + page selection with budget 4096, interval 4, P 64, L 16, selector cost amortised)
// at the sizes given on the command line, with bf16 KV and (--kv-cache-dtype auto fp8) E4M3 KV.
// Prints one line per case: time, and TFLOP/s or TB/s of the bytes the mode must read. Peers
// (PyTorch SDPA) are timed by bench/sdpa_peer.py in the same scripts/gpu-check.sh run.
// --prefill-sparsity T adds sparse prefill with dynamic block sparsity on the retrieval heads
// (the estimate and keep kernels included in the time). The inputs are random, so every key
// block gets about the same estimated share and a threshold T keeps about a fraction T of the
// blocks: the rows measure the cost at that kept fraction, not what real attention would keep;
// the last 256 queries (the default --prefill-dense-tail) keep every block, as served.
// --prefill-estimate picks the estimates timed (rows of sampled-rows end in "-rows").
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#include "kv/kv_cache.h"
#include "sparse/kv_traffic.h"

namespace lserve {
namespace {

constexpr int kHq = 32, kHkv = 8, kD = 128;

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
};

// 256 MB written before every timed run, so each starts with a cold L2 (50 MB on the H200) as in
// a model step, where the other layers' weights and KV pass through L2 between two calls of one
// layer's attention. Without it a sparse decode's ~25 MB would stay L2-resident across reps.
struct L2Flush {
  void* buf = nullptr;
  static constexpr size_t kBytes = 256u << 20;
  L2Flush() { LSERVE_CUDA_CHECK(cudaMalloc(&buf, kBytes)); }
  ~L2Flush() { cudaFree(buf); }
  void operator()(cudaStream_t st) const { cudaMemsetAsync(buf, 0, kBytes, st); }
};

// Median milliseconds of `fn` over `reps` runs after `warmup` runs; each timed run starts with a
// flushed L2 and includes the host's launch work (the queue is drained before it).
template <typename Fn>
double time_ms(CudaBackend& be, Fn fn, int warmup, int reps) {
  const auto st = static_cast<cudaStream_t>(be.stream_handle());
  static const L2Flush flush;
  for (int i = 0; i < warmup; ++i) fn();
  LSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> ms;
  Timer t;
  for (int i = 0; i < reps; ++i) {
    flush(st);
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st));
    cudaEventRecord(t.a, st);
    fn();
    cudaEventRecord(t.b, st);
    cudaEventSynchronize(t.b);
    float x = 0;
    cudaEventElapsedTime(&x, t.a, t.b);
    ms.push_back(x);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

HeadMap half_streaming(bool sparse) {
  std::vector<bool> flags(kHkv, true);
  if (sparse) {
    for (int h = 0; h < kHkv / 2; ++h) flags[h] = false;
  }
  return HeadMap::from_flags({flags});
}

void randomize(CudaBackend& be, Tensor& t, uint64_t seed) {
  if (!t.empty()) be.fill_random(t, seed, 1.0f);
}

struct Setup {
  std::unique_ptr<KvCache> cache;
  StepPlan plan;
};

// One layer; `batch` sequences each with `ctx` tokens cached; q_len new tokens each (the last
// q_len positions). Pages are contiguous per sequence; streaming heads keep sink + window pages.
Setup make_setup(CudaBackend& be, int batch, int ctx, int q_len, bool sparse, int budget,
                 int window, KvDtype kv_dtype, double prefill_sparsity = 0,
                 PrefillEstimate estimate = PrefillEstimate::kAntidiagonal) {
  Setup s;
  KvCacheConfig kc;
  kc.dtype = kv_dtype;
  kc.n_layers = 1;
  kc.n_heads = kHq;
  kc.n_kv_heads = kHkv;
  kc.head_dim = kD;
  kc.sparse.page_size = 64;
  kc.sparse.logical_page_size = 16;
  kc.sparse.sink_tokens = 128;
  kc.sparse.local_tokens = 256;
  kc.sparse.prefill_local_tokens = std::max(256, window);
  kc.sparse.token_budget = budget;
  kc.sparse.selector_skip_layers = 0;
  kc.sparse.dense = !sparse;
  kc.sparse.prefill_sparsity = prefill_sparsity;
  kc.sparse.prefill_estimate = estimate;
  const int P = 64, blocks = (ctx + P - 1) / P;
  kc.num_pages = batch * blocks;
  const int sink_blocks = 2;
  const int first_visible = std::max(0, ctx - q_len - window + 1);
  const int window_first = std::max(sink_blocks, first_visible / P);
  const int n_window = std::max(0, blocks - window_first);
  kc.num_stream_pages = sparse ? batch * (sink_blocks + n_window) : 0;
  kc.num_sel_slots = batch;
  s.cache = std::make_unique<KvCache>(be, kc, half_streaming(sparse));
  for (auto* t : {&s.cache->k(HeadClass::kRetrieval, 0), &s.cache->v(HeadClass::kRetrieval, 0),
                  &s.cache->kmin(0), &s.cache->kmax(0), &s.cache->k(HeadClass::kStreaming, 0),
                  &s.cache->v(HeadClass::kStreaming, 0)}) {
    randomize(be, *t, reinterpret_cast<uintptr_t>(t));
  }
  for (HeadClass c : {HeadClass::kRetrieval, HeadClass::kStreaming}) {
    for (Tensor* t : {&s.cache->k_scale(c, 0), &s.cache->v_scale(c, 0)}) {
      if (!t->empty()) be.fill(*t, 1.0f / 448.0f);  // fp8 rows of uniform(-1, 1) values
    }
  }
  LSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  StepPlan& p = s.plan;
  p.page_indptr.push_back(0);
  p.stream_indptr.push_back(0);
  for (int b = 0; b < batch; ++b) {
    SeqStep st;
    st.q_offset = b * q_len;
    st.q_len = q_len;
    st.start_pos = ctx - q_len;
    st.decode = q_len == 1;
    st.stream_window = q_len == 1 ? 256 : window;
    st.token_budget = sparse ? budget : 0;
    st.refresh_selection = sparse;
    st.sel_slot = b;
    if (sparse) {
      st.stream_sink_blocks = sink_blocks;
      st.stream_window_first = window_first;
    }
    for (int i = 0; i < q_len; ++i) {
      p.token_ids.push_back(0);
      p.positions.push_back(st.start_pos + i);
    }
    for (int k = 0; k < blocks; ++k) p.page_indices.push_back(b * blocks + k);
    p.page_indptr.push_back(static_cast<int32_t>(p.page_indices.size()));
    if (sparse) {
      const int base = b * (sink_blocks + n_window);
      for (int k = 0; k < sink_blocks + n_window; ++k) p.stream_indices.push_back(base + k);
    }
    p.stream_indptr.push_back(static_cast<int32_t>(p.stream_indices.size()));
    p.seqs.push_back(st);
  }
  return s;
}

// "dense" / "sparse", with "-fp8" for fp8 KV.
std::string mode_name(bool sparse, KvDtype kv_dtype) {
  return std::string(sparse ? "sparse" : "dense") + (kv_dtype == KvDtype::kFp8 ? "-fp8" : "");
}

void bench_prefill(CudaBackend& be, int n, bool sparse, KvDtype kv_dtype,
                   const char* label = nullptr, double prefill_sparsity = 0,
                   PrefillEstimate estimate = PrefillEstimate::kAntidiagonal) {
  Setup s = make_setup(be, 1, n, n, sparse, 4096, 8192, kv_dtype, prefill_sparsity, estimate);
  for (SeqStep& st : s.plan.seqs) {
    st.prefill_sparsity = prefill_sparsity;
    st.prefill_dense_from = s.cache->sparse().prefill_dense_from(n);  // as served
  }
  Tensor q = be.random(n, kHq * kD, 7, 1.0f), out = be.alloc(DType::BF16, n, kHq * kD);
  be.begin_step(s.plan, *s.cache);
  const int reps = n >= 65536 ? 3 : 10;
  const double ms = time_ms(
      be, [&] { be.attention(0, q, s.plan, *s.cache, out); }, 2, reps);
  // Causal dense FLOPs 2 N^2 d Hq (QK^T and PV over the lower triangle); reported against the
  // dense count so the sparse row shows effective throughput.
  const double flops = 2.0 * n * double(n) * kD * kHq;
  std::printf("prefill  %-10s N=%-7d  %9.3f ms  %7.1f TFLOP/s (dense-equivalent)\n",
              label ? label : mode_name(sparse, kv_dtype).c_str(), n, ms, flops / ms / 1e9);
}

void bench_decode(CudaBackend& be, int batch, int ctx, bool sparse, KvDtype kv_dtype) {
  Setup s = make_setup(be, batch, ctx, 1, sparse, 4096, 256, kv_dtype);
  Tensor q = be.random(batch, kHq * kD, 9, 1.0f), out = be.alloc(DType::BF16, batch, kHq * kD);
  be.begin_step(s.plan, *s.cache);
  double select_ms = 0;
  if (sparse) {
    select_ms = time_ms(
        be, [&] { be.select_pages(0, q, s.plan, *s.cache); }, 3, 20);
    be.select_pages(0, q, s.plan, *s.cache);
  }
  const double attn_ms = time_ms(
      be, [&] { be.attention(0, q, s.plan, *s.cache, out); }, 3, 30);
  const double ms = attn_ms + select_ms / 4;  // selector every 4 steps
  KvTraffic t;
  for (const auto& st : s.plan.seqs) {
    SeqStep no_refresh = st;
    no_refresh.refresh_selection = false;
    t += decode_kv_traffic(no_refresh, s.cache->heads(), kHq, s.cache->sparse(),
                           s.cache->row_bytes());
  }
  const double bytes = sparse
                           ? t.sparse_bytes + 0.25 *
                                                  [&] {
                                                    KvTraffic r;
                                                    for (const auto& st : s.plan.seqs)
                                                      r += decode_kv_traffic(st, s.cache->heads(),
                                                                             kHq, s.cache->sparse(),
                                                                             s.cache->row_bytes());
                                                    return r.selector_bytes;
                                                  }()
                           : t.dense_bytes;
  std::printf("decode   %-10s B=%-3d ctx=%-7d  %9.4f ms (attn %.4f + select %.4f/4)  %6.2f TB/s\n",
              mode_name(sparse, kv_dtype).c_str(), batch, ctx, ms, attn_ms, select_ms,
              bytes / ms / 1e9);
}

}  // namespace
}  // namespace lserve

int main(int argc, char** argv) {
  CLI::App app{"lserve attention kernel benchmark (Llama-3-8B attention shape, bf16)"};
  std::vector<int> prefill = {8192, 32768, 131072};
  std::vector<int> batches = {1, 8, 32};
  std::vector<int> contexts = {32768, 131072, 262144};
  app.add_option("--prefill", prefill, "Prefill lengths (0: none)")->capture_default_str();
  app.add_option("--batch", batches, "Decode batch sizes")->capture_default_str();
  app.add_option("--context", contexts, "Decode context lengths")->capture_default_str();
  bool portable = false, wgmma_tiles = false, sparse_only = false;
  std::vector<double> prefill_sparsity;
  app.add_option("--prefill-sparsity", prefill_sparsity,
                 "Also time sparse prefill (bf16) with dynamic block sparsity at these thresholds "
                 "(random inputs: a threshold T keeps about a fraction T of the key blocks)")
      ->check(CLI::Range(0.0, 1.0));
  std::vector<std::string> estimates = {"antidiagonal"};
  app.add_option("--prefill-estimate", estimates,
                 "Estimates to time --prefill-sparsity with (antidiagonal, sampled-rows)")
      ->check(CLI::IsMember({"antidiagonal", "sampled-rows"}))
      ->capture_default_str();
  std::vector<std::string> kv_dtypes = {"auto"};
  app.add_option("--kv-cache-dtype", kv_dtypes,
                 "KV element types to time, each case once per type (auto = bf16; fp8)")
      ->capture_default_str();
  int split_keys = 0;
  app.add_option("--min-split-keys", split_keys,
                 "Shortest key range of a split decode item (0: the backend's default)");
  app.add_flag("--sparse-only", sparse_only, "Only the sparse modes (for profiling)");
  app.add_flag(
      "--portable", portable,
      "Also time dense prefill with the portable mma.sync kernel (what non-Hopper GPUs run)");
  app.add_flag("--wgmma-tiles", wgmma_tiles,
               "Also time bf16 prefill (dense and sparse) with the wgmma tiles on Hopper (the "
               "default before the warp-specialised kernel; fp8 pools still use them)");
  CLI11_PARSE(app, argc, argv);
  try {
    lserve::CudaBackend be(0);
    if (split_keys > 0) be.set_min_split_keys(split_keys);
    std::vector<lserve::KvDtype> types;
    for (const auto& t : kv_dtypes) types.push_back(lserve::parse_kv_dtype(t));
    for (int n : prefill) {
      if (n <= 0) continue;  // --prefill 0: decode only
      for (lserve::KvDtype t : types) {
        if (!sparse_only) lserve::bench_prefill(be, n, false, t);
        lserve::bench_prefill(be, n, true, t);
      }
      // dyn-T rows: --prefill-sparsity T on the retrieval heads, with the current kernels.
      auto bench_dynamic = [&](const std::string& suffix) {
        for (const std::string& name : estimates) {
          const lserve::PrefillEstimate e = lserve::parse_prefill_estimate(name);
          for (double t : prefill_sparsity) {
            const std::string label = "dyn-" + std::to_string(t).substr(0, 4) +
                                      (e == lserve::PrefillEstimate::kSampledRows ? "-rows" : "") +
                                      suffix;
            lserve::bench_prefill(be, n, true, lserve::KvDtype::kAuto, label.c_str(), t, e);
          }
        }
      };
      bench_dynamic("");
      if (portable) {
        be.set_attention_kernels(lserve::CudaBackend::AttnKernels::kPortable);
        lserve::bench_prefill(be, n, false, lserve::KvDtype::kAuto, "dense-mma");
      }
      if (wgmma_tiles) {
        be.set_attention_kernels(lserve::CudaBackend::AttnKernels::kWgmmaTiles);
        lserve::bench_prefill(be, n, false, lserve::KvDtype::kAuto, "dense-tiles");
        lserve::bench_prefill(be, n, true, lserve::KvDtype::kAuto, "sparse-tiles");
        bench_dynamic("-tiles");
      }
      be.set_attention_kernels(lserve::CudaBackend::AttnKernels::kAuto);
    }
    for (int b : batches) {
      for (int c : contexts) {
        for (lserve::KvDtype t : types) {
          if (!sparse_only) lserve::bench_decode(be, b, c, false, t);
          lserve::bench_decode(be, b, c, true, t);
        }
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
