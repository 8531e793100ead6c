// The CUDA sampling kernel against the host reference (backend/sampling.h). Both make their
// decisions with the same helpers in IEEE arithmetic that no compiler may contract, so tokens must
// be equal row for row (the algorithm asks for 99%; any difference is a kernel bug here);
// logprobs sum in another order, so they agree to 1e-4. Skipped, saying why, where no GPU is
// present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/sampling_launch.h"
#include "backend/sampling.h"
#include "gpu_test.h"
#include "test_util.h"

#define CUDA_OK(expr)                                                          \
  do {                                                                         \
    const cudaError_t err_ = (expr);                                           \
    ASSERT_EQ(err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(err_); \
  } while (0)

namespace lserve {
namespace {

using test::make_row;
using test::random_logits;

// Rows of logits [rows, ld] with their parameters and edits, as a step hands them over.
struct Batch {
  int64_t ld = 0;
  std::vector<float> logits;
  std::vector<SampleRow> rows;
  std::vector<LogitEdit> edits;

  void add(std::span<const float> l, SampleRow row, const std::vector<LogitEdit>& e = {}) {
    ASSERT_EQ(static_cast<int64_t>(l.size()), ld);
    logits.insert(logits.end(), l.begin(), l.end());
    row.edit_begin = static_cast<int32_t>(edits.size());
    edits.insert(edits.end(), e.begin(), e.end());
    row.edit_end = static_cast<int32_t>(edits.size());
    rows.push_back(row);
  }
};

struct DeviceBuffer {
  void* p = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (p) {
      EXPECT_EQ(cudaFree(p), cudaSuccess);
    }
  }
};

// Uploads `bytes` (at least one byte is allocated, so empty lists still get a pointer).
void upload(DeviceBuffer& d, const void* host, size_t bytes) {
  CUDA_OK(cudaMalloc(&d.p, std::max<size_t>(bytes, 1)));
  if (bytes) CUDA_OK(cudaMemcpy(d.p, host, bytes, cudaMemcpyHostToDevice));
}

void run_gpu(const Batch& b, std::vector<SampledToken>* out) {
  DeviceBuffer logits, rows, edits, results;
  ASSERT_NO_FATAL_FAILURE(upload(logits, b.logits.data(), b.logits.size() * sizeof(float)));
  ASSERT_NO_FATAL_FAILURE(upload(rows, b.rows.data(), b.rows.size() * sizeof(SampleRow)));
  ASSERT_NO_FATAL_FAILURE(upload(edits, b.edits.data(), b.edits.size() * sizeof(LogitEdit)));
  CUDA_OK(cudaMalloc(&results.p, b.rows.size() * sizeof(SampledToken)));
  CUDA_OK(cuda::launch_sample(
      static_cast<const float*>(logits.p), b.ld, static_cast<int>(b.rows.size()),
      static_cast<const SampleRow*>(rows.p), static_cast<const LogitEdit*>(edits.p),
      static_cast<SampledToken*>(results.p), cuda::Stream{}));
  CUDA_OK(cudaDeviceSynchronize());
  out->resize(b.rows.size());
  CUDA_OK(cudaMemcpy(out->data(), results.p, b.rows.size() * sizeof(SampledToken),
                     cudaMemcpyDeviceToHost));
  // The kernel only reads the logits.
  std::vector<float> after(b.logits.size());
  CUDA_OK(cudaMemcpy(after.data(), logits.p, after.size() * sizeof(float), cudaMemcpyDeviceToHost));
  EXPECT_EQ(0, std::memcmp(after.data(), b.logits.data(), after.size() * sizeof(float)));
}

std::vector<SampledToken> run_host(const Batch& b) {
  std::vector<SampledToken> out;
  for (size_t r = 0; r < b.rows.size(); ++r) {
    std::vector<float> l(b.logits.begin() + static_cast<int64_t>(r) * b.ld,
                         b.logits.begin() + static_cast<int64_t>(r + 1) * b.ld);
    const SampleRow& row = b.rows[r];
    out.push_back(
        sample_row(l, row,
                   std::span<const LogitEdit>(b.edits.data() + row.edit_begin,
                                              static_cast<size_t>(row.edit_end - row.edit_begin))));
  }
  return out;
}

std::string describe(const SampleRow& r) {
  return "vocab " + std::to_string(r.vocab) + " temperature " + std::to_string(r.temperature) +
         " top_k " + std::to_string(r.top_k) + " top_p " + std::to_string(r.top_p) + " min_p " +
         std::to_string(r.min_p) + " counter " + std::to_string(r.counter) + " edits " +
         std::to_string(r.edit_end - r.edit_begin) + " logprobs " + std::to_string(r.logprobs);
}

// The GPU's results equal the host reference's: tokens exactly, logprobs to 1e-4.
void expect_same(const Batch& b) {
  std::vector<SampledToken> gpu;
  ASSERT_NO_FATAL_FAILURE(run_gpu(b, &gpu));
  const std::vector<SampledToken> host = run_host(b);
  for (size_t r = 0; r < b.rows.size(); ++r) {
    const SampledToken &g = gpu[r], &h = host[r];
    SCOPED_TRACE("row " + std::to_string(r) + ": " + describe(b.rows[r]));
    EXPECT_EQ(g.token, h.token);
    EXPECT_EQ(g.n_top, h.n_top);
    if (g.token == h.token) {
      EXPECT_NEAR(g.logprob, h.logprob, 1e-4);
    }
    for (int i = 0; i < kMaxTopLogprobs; ++i) {
      EXPECT_EQ(g.top_ids[i], h.top_ids[i]) << "top " << i;
      EXPECT_NEAR(g.top_logprobs[i], h.top_logprobs[i], 1e-4) << "top " << i;
    }
  }
}

// Sorted distinct tokens below `vocab` with random edits.
std::vector<LogitEdit> random_edits(int count, int vocab, std::mt19937_64& rng) {
  std::vector<int32_t> ids;
  for (int i = 0; i < count; ++i) ids.push_back(static_cast<int32_t>(rng() % vocab));
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<LogitEdit> e;
  for (int32_t t : ids) {
    e.push_back({t, u(rng) < 0.5f ? 0.0f : 4.0f * u(rng) - 2.0f,
                 u(rng) < 0.5f ? 1.0f : 1.0f + u(rng), u(rng) < 0.5f ? 0.0f : u(rng)});
  }
  return e;
}

class CudaSampling : public testing::Test {
 protected:
  void SetUp() override { LSERVE_SKIP_WITHOUT_GPU(); }
};

TEST_F(CudaSampling, MatchesHostReference) {
  std::mt19937_64 rng(test::test_seed());
  struct Params {
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  const Params params[] = {
      {0.0f, 0, 1.0f, 0.0f},     {1.0f, 0, 1.0f, 0.0f},      {0.7f, 40, 1.0f, 0.0f},
      {0.7f, 1, 1.0f, 0.0f},     {1.0f, 40, 0.9f, 0.05f},    {0.8f, 0, 0.9f, 0.0f},
      {1.2f, 0, 0.5f, 0.1f},     {1.0f, 0, 0.0f, 0.0f},      {1.0f, 0, 1.0f, 0.2f},
      {1.0f, 1000, 0.95f, 0.0f}, {1.0f, 1024, 1.0f, 0.0f},   {1.0f, 1025, 0.8f, 0.01f},
      {0.9f, 3000, 0.7f, 0.0f},  {1.0f, 200000, 1.0f, 0.0f}, {2.0f, 7, 1.0f, 1.0f},
      {0.5f, 50, 0.9f, 0.0f},
  };
  for (int vocab : {1, 17, 1000, 49152, 128256}) {
    // An odd padded row: ids past the vocabulary hold logits that would win.
    const int64_t ld = vocab + 3;
    Batch b;
    b.ld = ld;
    for (const Params& p : params) {
      for (int variant = 0; variant < 2; ++variant) {
        auto l = random_logits(ld, rng, variant ? 1.0f : 4.0f);
        for (int64_t i = vocab; i < ld; ++i) l[i] = 1e4f;
        if (variant) {
          // Ties: logits on a coarse grid, and the maximum repeated.
          for (int i = 0; i < vocab; ++i) l[i] = std::round(l[i] * 4.0f) / 4.0f;
        }
        const int logprobs = static_cast<int>(rng() % 23) - 2;  // -2..20
        const int n_edits = vocab < 10 ? 0 : std::vector<int>{0, 3, 300}[rng() % 3];
        ASSERT_NO_FATAL_FAILURE(b.add(l,
                                      make_row(vocab, p.temperature, p.top_k, p.top_p, p.min_p,
                                               rng(), static_cast<uint32_t>(rng()), logprobs),
                                      random_edits(n_edits, vocab, rng)));
      }
    }
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    expect_same(b);
  }
}

TEST_F(CudaSampling, EditsAndTies) {
  std::mt19937_64 rng(test::test_seed());
  const int vocab = 5000;
  Batch b;
  b.ld = vocab;
  const auto l = random_logits(vocab, rng, 2.0f);
  const int best = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin());
  const int other = (best + 1234) % vocab;
  auto row = [&](float t, int k, float p, float mp, int logprobs = 3) {
    return make_row(vocab, t, k, p, mp, rng(), static_cast<uint32_t>(rng()), logprobs);
  };
  // A forced token (its logprob is still the raw one), a banned best, a repetition penalty.
  b.add(l, row(0.0f, 0, 1.0f, 0.0f), {{other, 100.0f, 1.0f, 0.0f}});
  b.add(l, row(1.0f, 40, 0.9f, 0.0f), {{other, 100.0f, 1.0f, 0.0f}});
  b.add(l, row(0.0f, 0, 1.0f, 0.0f), {{best, -INFINITY, 1.0f, 0.0f}});
  b.add(l, row(0.0f, 0, 1.0f, 0.0f), {{best, 0.0f, 50.0f, 3.0f}});
  // Edits outside the vocabulary are ignored; out of order, the row is rejected.
  b.add(l, row(0.0f, 0, 1.0f, 0.0f),
        {{-5, 100.0f, 1.0f, 0.0f}, {other, 1.0f, 1.0f, 0.0f}, {vocab + 2, 100.0f, 1.0f, 0.0f}});
  b.add(l, row(0.0f, 0, 1.0f, 0.0f), {{other, 1.0f, 1.0f, 0.0f}, {3, 1.0f, 1.0f, 0.0f}});
  // All equal: top-k takes the lowest ids; greedy the first.
  const std::vector<float> flat(vocab, 0.5f);
  b.add(flat, row(0.0f, 0, 1.0f, 0.0f));
  for (int k : {1, 5, 1024, 1500}) b.add(flat, row(1.0f, k, 1.0f, 0.0f));
  b.add(flat, row(1.0f, 0, 0.3f, 0.0f));
  b.add(flat, row(1.0f, 2000, 0.3f, 0.0f));
  // All -inf, or NaN: weight 1 each (they are the maximum).
  // (No logprobs: the log-sum-exp of such a row is not a number.)
  b.add(std::vector<float>(vocab, -INFINITY), row(1.0f, 10, 0.5f, 0.0f, -1));
  b.add(std::vector<float>(vocab, NAN), row(1.0f, 0, 1.0f, 0.0f, -1));
  // A run of ties straddling the top-k and top-p cuts.
  std::vector<float> steps(vocab);
  for (int i = 0; i < vocab; ++i) steps[i] = static_cast<float>((i * 7919) % 13);
  for (int k : {10, 100, 385, 1200}) {
    for (float p : {0.1f, 0.6f, 1.0f}) b.add(steps, row(0.9f, k, p, 0.0f));
  }
  b.add(steps, row(0.9f, 0, 0.6f, 0.0f));
  expect_same(b);

  std::vector<SampledToken> gpu;
  ASSERT_NO_FATAL_FAILURE(run_gpu(b, &gpu));
  EXPECT_EQ(gpu[0].token, other);
  EXPECT_EQ(gpu[1].token, other);
  EXPECT_NEAR(gpu[1].logprob, gpu[0].logprob, 1e-6);
  EXPECT_NE(gpu[2].token, best);
  EXPECT_NE(gpu[3].token, best);
  EXPECT_EQ(gpu[5].token, -1);
  EXPECT_EQ(gpu[6].token, 0);
  EXPECT_EQ(gpu[7].token, 0);
  EXPECT_LT(gpu[8].token, 5);
}

TEST_F(CudaSampling, LargeVocabularySearchesTheEditList) {
  // Ids past 2^18 are looked up in the sorted edit list, not the shared-memory bitmap.
  std::mt19937_64 rng(test::test_seed());
  const int vocab = 300007;
  Batch b;
  b.ld = vocab;
  const auto l = random_logits(vocab, rng, 2.0f);
  auto edits = random_edits(500, vocab, rng);
  edits.push_back({vocab - 1, 50.0f, 1.0f, 0.0f});
  b.add(l, make_row(vocab, 0.0f, 0, 1.0f, 0.0f, 1, 0, 5), edits);
  b.add(l, make_row(vocab, 1.0f, 40, 0.9f, 0.0f, rng(), 3, 5), random_edits(2000, vocab, rng));
  b.add(l, make_row(vocab, 1.0f, 0, 0.9f, 0.0f, rng(), 4, -1), random_edits(100, vocab, rng));
  expect_same(b);
  std::vector<SampledToken> gpu;
  ASSERT_NO_FATAL_FAILURE(run_gpu(b, &gpu));
  EXPECT_EQ(gpu[0].token, vocab - 1);
}

// Total variation distance between two histograms of equal totals.
double total_variation(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += std::abs(a[i] - b[i]);
  return d / 2;
}

TEST_F(CudaSampling, DrawFrequencies) {
  std::mt19937_64 rng(test::test_seed());
  struct Case {
    int draws, vocab, top_k;
    float temperature, top_p, min_p;
    bool softmax;  // also compare with the softmax over the top-k set
  };
  // One row drawn 20000 times (counters 0..19999, one launch), and two more paths 4000 times.
  for (const Case& c :
       {Case{20000, 1000, 6, 0.9f, 1.0f, 0.0f, true}, Case{4000, 4096, 0, 1.0f, 0.8f, 0.02f, false},
        Case{4000, 4096, 1500, 1.0f, 0.7f, 0.0f, false}}) {
    const int draws = c.draws;
    SCOPED_TRACE("vocab " + std::to_string(c.vocab) + " top_k " + std::to_string(c.top_k));
    const auto l = random_logits(c.vocab, rng, c.softmax ? 1.0f : 2.5f);
    const uint64_t seed = rng();
    Batch b;
    b.ld = c.vocab;
    for (int i = 0; i < draws; ++i) {
      b.add(l, make_row(c.vocab, c.temperature, c.top_k, c.top_p, c.min_p, seed,
                        static_cast<uint32_t>(i), -1));
    }
    std::vector<SampledToken> gpu;
    ASSERT_NO_FATAL_FAILURE(run_gpu(b, &gpu));
    const auto host = run_host(b);
    std::vector<double> hg(c.vocab, 0.0), hh(c.vocab, 0.0);
    for (int i = 0; i < draws; ++i) {
      ASSERT_GE(gpu[i].token, 0);
      ASSERT_LT(gpu[i].token, c.vocab);
      hg[gpu[i].token] += 1.0 / draws;
      hh[host[i].token] += 1.0 / draws;
    }
    EXPECT_LT(total_variation(hg, hh), 0.02);
    if (c.softmax) {
      std::vector<int> order(c.vocab);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
      std::vector<double> p(c.vocab, 0.0);
      double sum = 0;
      for (int j = 0; j < c.top_k; ++j) {
        sum += p[order[j]] = std::exp((l[order[j]] - l[order[0]]) / c.temperature);
      }
      for (auto& x : p) x /= sum;
      EXPECT_LT(total_variation(hg, p), 0.02);
    }
  }
}

}  // namespace
}  // namespace lserve
