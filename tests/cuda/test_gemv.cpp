// The skinny decode GEMM (backend/cuda/gemv.h) against a float64 CPU reference: every candidate
// configuration, token counts on and off the 8-token tile, odd row counts, bf16 and f32 outputs,
// accumulate on and off, several targets in one launch, and programmatic dependent launches whose
// inputs the kernel just before writes. Outputs are poisoned before each run and bordered by
// sentinels (padding columns, rows past n) that must survive. The rejection of invalid shapes runs
// without a GPU too; the rest is skipped, saying why, where no GPU is present.
#include "backend/cuda/gemv.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#include "core/dtype.h"
#include "gpu_test.h"
#include "test_util.h"

namespace lserve::cuda {
namespace {

using test::DeviceBuffer;

constexpr double kBf16Tol = 5e-3;  // 8 significant bits per output element
constexpr double kF32Tol = 1e-5;
constexpr uint16_t kBf16Nan = 0x7fc1, kBf16Sentinel = 0x1234;
constexpr uint32_t kF32Nan = 0x7fc00001u, kF32Sentinel = 0x12345678u;

// Random bf16 values (never zeros: they hide unwritten outputs and wrong indexing).
std::vector<uint16_t> random_bf16(size_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<uint16_t> v(n);
  for (auto& b : v) {
    float f = dist(rng);
    if (f == 0.0f) f = scale;
    b = f32_to_bf16(f);
  }
  return v;
}

std::string describe(const GemvConfig& c) {
  return fmt::format("mt {} warps {} unroll {}", c.mt, c.warps, c.unroll);
}

// A weight matrix and where its output goes: column `col0` on of an output buffer shared with the
// other targets of the launch.
struct HostTarget {
  int64_t rows = 0;
  std::vector<uint16_t> w;  // [rows, k]
  std::vector<float> wf;    // the same values, for the reference
  int64_t col0 = 0;
};

HostTarget random_target(int64_t rows, int64_t k, int64_t col0, std::mt19937_64& rng) {
  HostTarget t{rows, random_bf16(static_cast<size_t>(rows) * k, rng, 0.05f), {}, col0};
  for (uint16_t b : t.w) t.wf.push_back(bf16_to_f32(b));
  return t;
}

class Gemv : public testing::Test {
 protected:
  void SetUp() override {
    LSERVE_SKIP_WITHOUT_GPU();
    LSERVE_CUDA_CHECK(cudaStreamCreateWithFlags(&st_, cudaStreamNonBlocking));
    std::vector<int32_t> iota(kIotaRows);
    std::iota(iota.begin(), iota.end(), 0);
    iota_ = std::make_unique<DeviceBuffer>(iota.size() * sizeof(int32_t));
    upload(iota_->p, iota.data(), iota.size() * sizeof(int32_t));
  }
  // Host -> device through the test's stream, then waits for it. A plain cudaMemcpy from pageable
  // memory goes on the legacy stream and may return before its DMA lands, and st_ (non-blocking)
  // does not wait for that stream: a kernel could read half-copied inputs (a Gemv case once saw
  // a relative error of 3e-2 that no rerun reproduced).
  void upload(void* dst, const void* host, size_t bytes) {
    LSERVE_CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, st_));
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st_));
  }
  void TearDown() override {
    if (st_ != nullptr) cudaStreamDestroy(st_);
  }

  // Uploads `bytes` to `staging`, poisons `dst`, then copies staging -> dst with a kernel on the
  // stream: the kernel right before a (programmatic dependent) launch that reads dst.
  void write_by_kernel(void* dst, const void* host, size_t bytes) {
    ASSERT_EQ(bytes % (2 * kIotaRows), 0u);
    DeviceBuffer staging(bytes);
    upload(staging.p, host, bytes);
    LSERVE_CUDA_CHECK(cudaMemsetAsync(dst, 0xff, bytes, st_));  // bf16 0xffff: NaN
    const int64_t cols = static_cast<int64_t>(bytes / 2 / kIotaRows);
    LSERVE_CUDA_CHECK(launch_gather_rows(static_cast<const bf16*>(staging.p), iota_->as<int32_t>(),
                                         kIotaRows, cols, static_cast<bf16*>(dst),
                                         Stream{st_, false}));
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st_));  // staging is freed on return
  }

  // One launch over `targets` sharing one output buffer of ld_out columns; returns false (after
  // reporting) on a mismatch. The ingredients are random, the reference float64.
  bool run_case(const std::vector<HostTarget>& targets, int n, int64_t k, int64_t ldx,
                int64_t ld_out, const GemvConfig& cfg, bool out_f32, bool accumulate, bool pdl,
                std::mt19937_64& rng, const std::string& what) {
    const auto x = random_bf16(static_cast<size_t>(n) * ldx, rng, 1.0f);
    std::vector<float> xf;
    for (uint16_t b : x) xf.push_back(bf16_to_f32(b));
    // x goes through a kernel so that a PDL launch that read it too early would see NaN.
    std::vector<uint16_t> x_padded(static_cast<size_t>(kIotaRows) * ldx, kBf16Nan);
    std::copy(x.begin(), x.end(), x_padded.begin());
    DeviceBuffer dx(x_padded.size() * 2);
    write_by_kernel(dx.p, x_padded.data(), x_padded.size() * 2);

    std::vector<std::unique_ptr<DeviceBuffer>> dw;
    for (const auto& t : targets) {
      dw.push_back(std::make_unique<DeviceBuffer>(t.w.size() * 2));
      upload(dw.back()->p, t.w.data(), t.w.size() * 2);
    }

    // Output: NaN where the kernel must write (or the old values it adds to), sentinels elsewhere.
    const size_t esize = out_f32 ? 4 : 2;
    const size_t out_rows = kIotaRows;  // rows past n are border too: they keep their sentinels
    std::vector<uint8_t> out_host(out_rows * ld_out * esize);
    std::vector<double> expect(static_cast<size_t>(n) * ld_out, 0.0);
    std::vector<bool> written(out_rows * ld_out, false);
    auto put = [&](size_t i, float f, bool raw_nan) {
      if (out_f32) {
        const uint32_t b = raw_nan ? kF32Nan : f32_to_bits(f);
        std::memcpy(&out_host[i * 4], &b, 4);
      } else {
        const uint16_t b = raw_nan ? kBf16Nan : f32_to_bf16(f);
        std::memcpy(&out_host[i * 2], &b, 2);
      }
    };
    for (size_t i = 0; i < out_rows * static_cast<size_t>(ld_out); ++i) {
      if (out_f32) {
        std::memcpy(&out_host[i * 4], &kF32Sentinel, 4);
      } else {
        std::memcpy(&out_host[i * 2], &kBf16Sentinel, 2);
      }
    }
    std::normal_distribution<float> old_dist(0.0f, 4.0f);
    for (const auto& t : targets) {
      for (int tok = 0; tok < n; ++tok) {
        for (int64_t o = 0; o < t.rows; ++o) {
          const size_t i = static_cast<size_t>(tok) * ld_out + t.col0 + o;
          double dot = 0;
          const float* xr = xf.data() + static_cast<size_t>(tok) * ldx;
          const float* wr = t.wf.data() + static_cast<size_t>(o) * k;
          for (int64_t j = 0; j < k; ++j) dot += static_cast<double>(xr[j]) * wr[j];
          if (accumulate) {
            const float old = bf16_to_f32(f32_to_bf16(old_dist(rng)));
            put(i, old, false);
            dot += old;
          } else {
            put(i, 0, true);
          }
          expect[i] = dot;
          written[i] = true;
        }
      }
    }
    DeviceBuffer dout(out_host.size());
    write_by_kernel(dout.p, out_host.data(), out_host.size());

    std::vector<GemvTarget> gt;
    for (size_t i = 0; i < targets.size(); ++i) {
      gt.push_back(
          {dw[i]->p, targets[i].rows, dout.as<uint8_t>() + targets[i].col0 * esize, ld_out});
    }
    const cudaError_t err = launch_gemv(dx.p, ldx, n, k, gt.data(), static_cast<int>(gt.size()),
                                        out_f32, accumulate, cfg, Stream{st_, pdl});
    if (err != cudaSuccess) {
      ADD_FAILURE() << what << ": launch failed: " << cudaGetErrorString(err);
      return false;
    }
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st_));
    std::vector<uint8_t> got(out_host.size());
    LSERVE_CUDA_CHECK(cudaMemcpy(got.data(), dout.p, got.size(), cudaMemcpyDeviceToHost));

    double num = 0, den = 0;
    for (size_t i = 0; i < written.size(); ++i) {
      if (!written[i]) {
        if (std::memcmp(&got[i * esize], &out_host[i * esize], esize) != 0) {
          ADD_FAILURE() << what << ": element (" << i / ld_out << ", " << i % ld_out
                        << ") outside the output was overwritten";
          return false;
        }
        continue;
      }
      float v;
      if (out_f32) {
        std::memcpy(&v, &got[i * 4], 4);
      } else {
        uint16_t b;
        std::memcpy(&b, &got[i * 2], 2);
        v = bf16_to_f32(b);
      }
      num += (v - expect[i]) * (v - expect[i]);  // NaN (unwritten) makes num NaN
      den += expect[i] * expect[i];
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    const double tol = out_f32 ? kF32Tol : kBf16Tol;
    if (!(rel < tol)) {
      ADD_FAILURE() << what << ": relative L2 error " << rel << " (limit " << tol << ")";
      return false;
    }
    return true;
  }

  static constexpr int kIotaRows = 64;
  cudaStream_t st_ = nullptr;
  std::unique_ptr<DeviceBuffer> iota_;
};

TEST_F(Gemv, EveryConfigMatchesTheReference) {
  std::mt19937_64 rng(test::test_seed());
  int failures = 0;
  for (int64_t k : {32, 96, 576, 4096}) {
    for (int64_t rows : {17, 97, 1000}) {
      const std::vector<HostTarget> targets = {random_target(rows, k, 0, rng)};
      for (int n : {1, 3, 8, 9, 17, 32}) {
        const int64_t ldx = n % 2 ? k + 8 : k;  // padded rows too
        const int64_t ld_out = rows + 3;        // padding columns hold sentinels
        for (const GemvConfig& cfg : gemv_configs()) {
          for (bool out_f32 : {false, true}) {
            for (bool accumulate : {false, true}) {
              for (bool pdl : {false, true}) {
                const std::string what =
                    fmt::format("k {} rows {} n {} {} out {} accumulate {} pdl {}", k, rows, n,
                                describe(cfg), out_f32 ? "f32" : "bf16", accumulate, pdl);
                if (!run_case(targets, n, k, ldx, ld_out, cfg, out_f32, accumulate, pdl, rng,
                              what) &&
                    ++failures >= 10) {
                  return;
                }
              }
            }
          }
        }
      }
    }
  }
}

// Q, K and V style: three weight matrices (two of odd row counts) in one launch, writing side by
// side into one output buffer.
TEST_F(Gemv, SeveralTargetsInOneLaunch) {
  std::mt19937_64 rng(test::test_seed());
  int failures = 0;
  for (int64_t k : {96, 576}) {
    std::vector<HostTarget> targets;
    int64_t col = 0;
    for (int64_t rows : {97, 64, 33}) {
      targets.push_back(random_target(rows, k, col, rng));
      col += rows + 1;  // a sentinel column between targets
    }
    for (int n : {1, 9, 32}) {
      for (const GemvConfig& cfg : gemv_configs()) {
        for (bool out_f32 : {false, true}) {
          for (bool accumulate : {false, true}) {
            for (bool pdl : {false, true}) {
              const std::string what =
                  fmt::format("3 targets k {} n {} {} out {} accumulate {} pdl {}", k, n,
                              describe(cfg), out_f32 ? "f32" : "bf16", accumulate, pdl);
              if (!run_case(targets, n, k, k, col, cfg, out_f32, accumulate, pdl, rng, what) &&
                  ++failures >= 10) {
                return;
              }
            }
          }
        }
      }
    }
  }
}

// Back-to-back programmatic dependent launches: the first starts its successor early, which must
// still read the first one's output (its x) and add to its own out only after the first is done.
TEST_F(Gemv, ChainedDependentLaunchesSeeTheirInputs) {
  std::mt19937_64 rng(test::test_seed());
  constexpr int n = 5;
  constexpr int64_t k1 = 4096, mid = 576, rows2 = 4096;
  const auto x = random_bf16(n * k1, rng, 1.0f);
  const auto w1 = random_bf16(mid * k1, rng, 0.05f);
  const auto w2 = random_bf16(rows2 * mid, rng, 0.05f);
  const auto old = random_bf16(n * rows2, rng, 1.0f);
  DeviceBuffer dx(x.size() * 2), dw1(w1.size() * 2), dw2(w2.size() * 2), dy(n * mid * 2),
      dout(old.size() * 2);
  upload(dx.p, x.data(), x.size() * 2);
  upload(dw1.p, w1.data(), w1.size() * 2);
  upload(dw2.p, w2.data(), w2.size() * 2);
  for (const GemvConfig& cfg : gemv_configs()) {
    LSERVE_CUDA_CHECK(cudaMemsetAsync(dy.p, 0xff, n * mid * 2, st_));  // NaN
    LSERVE_CUDA_CHECK(
        cudaMemcpyAsync(dout.p, old.data(), old.size() * 2, cudaMemcpyHostToDevice, st_));
    const GemvTarget t1{dw1.p, mid, dy.p, mid}, t2{dw2.p, rows2, dout.p, rows2};
    ASSERT_EQ(launch_gemv(dx.p, k1, n, k1, &t1, 1, false, false, cfg, Stream{st_, true}),
              cudaSuccess);
    ASSERT_EQ(launch_gemv(dy.p, mid, n, mid, &t2, 1, false, true, cfg, Stream{st_, true}),
              cudaSuccess);
    LSERVE_CUDA_CHECK(cudaStreamSynchronize(st_));
    std::vector<uint16_t> y(n * mid), out(n * rows2);
    LSERVE_CUDA_CHECK(cudaMemcpy(y.data(), dy.p, y.size() * 2, cudaMemcpyDeviceToHost));
    LSERVE_CUDA_CHECK(cudaMemcpy(out.data(), dout.p, out.size() * 2, cudaMemcpyDeviceToHost));
    // The second product is checked against the first one's actual output.
    double num = 0, den = 0;
    for (int t = 0; t < n; ++t) {
      for (int64_t o = 0; o < rows2; ++o) {
        double ref = bf16_to_f32(old[t * rows2 + o]);
        for (int64_t j = 0; j < mid; ++j) {
          ref += static_cast<double>(bf16_to_f32(y[t * mid + j])) * bf16_to_f32(w2[o * mid + j]);
        }
        const double d = bf16_to_f32(out[t * rows2 + o]) - ref;
        num += d * d;
        den += ref * ref;
      }
    }
    EXPECT_LT(std::sqrt(num / den), kBf16Tol) << describe(cfg);
    bool y_finite = true;
    for (uint16_t b : y) y_finite = y_finite && std::isfinite(bf16_to_f32(b));
    EXPECT_TRUE(y_finite) << describe(cfg);
  }
}

// Shapes and configurations the kernel cannot take are refused before anything is launched, so
// this runs without a GPU (the pointers are never dereferenced).
TEST(GemvLaunch, RejectsInvalidShapes) {
  auto* const x = reinterpret_cast<void*>(uintptr_t{1} << 20);
  auto* const w = reinterpret_cast<void*>(uintptr_t{2} << 20);
  auto* const out = reinterpret_cast<void*>(uintptr_t{3} << 20);
  const GemvConfig ok = gemv_configs().front();
  const GemvTarget t{w, 64, out, 64};
  auto launch = [&](const void* xp, int64_t ldx, int n, int64_t k, const GemvTarget* ts, int nt,
                    const GemvConfig& c) {
    return launch_gemv(xp, ldx, n, k, ts, nt, false, false, c, Stream{});
  };
  constexpr cudaError_t kInvalid = cudaErrorInvalidValue;
  EXPECT_EQ(launch(x, 64, 0, 64, &t, 1, ok), kInvalid);   // n < 1
  EXPECT_EQ(launch(x, 64, 33, 64, &t, 1, ok), kInvalid);  // n > 32
  EXPECT_EQ(launch(x, 48, 1, 48, &t, 1, ok), kInvalid);   // k % 32
  EXPECT_EQ(launch(x, 64, 1, 0, &t, 1, ok), kInvalid);    // k == 0
  EXPECT_EQ(launch(x, 68, 2, 64, &t, 1, ok), kInvalid);   // ldx % 8
  EXPECT_EQ(launch(x, 32, 2, 64, &t, 1, ok), kInvalid);   // ldx < k
  EXPECT_EQ(launch(static_cast<const char*>(x) + 8, 64, 1, 64, &t, 1, ok), kInvalid);
  EXPECT_EQ(launch(nullptr, 64, 1, 64, &t, 1, ok), kInvalid);
  EXPECT_EQ(launch(x, 64, 1, 64, &t, 0, ok), kInvalid);  // no targets
  const GemvTarget five[5] = {t, t, t, t, t};
  EXPECT_EQ(launch(x, 64, 1, 64, five, 5, ok), kInvalid);
  const GemvTarget misaligned_w{static_cast<const char*>(w) + 2, 64, out, 64};
  EXPECT_EQ(launch(x, 64, 1, 64, &misaligned_w, 1, ok), kInvalid);
  const GemvTarget narrow_out{w, 64, out, 63};  // ld_out < rows
  EXPECT_EQ(launch(x, 64, 1, 64, &narrow_out, 1, ok), kInvalid);
  const GemvTarget negative{w, -1, out, 64};
  EXPECT_EQ(launch(x, 64, 1, 64, &negative, 1, ok), kInvalid);
  const GemvTarget odd_f32_out{w, 64, static_cast<char*>(out) + 2, 64};
  EXPECT_EQ(launch_gemv(x, 64, 1, 64, &odd_f32_out, 1, true, false, ok, Stream{}), kInvalid);
  for (const GemvConfig bad :
       {GemvConfig{3, 4, 4}, GemvConfig{0, 4, 4}, GemvConfig{1, 6, 4}, GemvConfig{1, 4, 3},
        GemvConfig{2, 4, 8}, GemvConfig{1, 4, 16}, GemvConfig{4, 4, 2}}) {
    EXPECT_EQ(launch(x, 64, 1, 64, &t, 1, bad), kInvalid) << describe(bad);
  }
}

}  // namespace
}  // namespace lserve::cuda
