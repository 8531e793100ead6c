#include "backend/cpu/cpu_backend.h"

#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "core/error.h"

namespace lserve {
namespace {

void check_f32(const Tensor& t, const char* what) {
  LSERVE_ASSERT(t.dtype == DType::F32 && t.data != nullptr);
  (void)what;
}

// Rows per parallel task: big enough that scheduling cost is negligible.
constexpr int64_t kRowsPerTask = 4;

}  // namespace

CpuBackend::CpuBackend(int threads) : pool_(threads) {
  // GEMMs are split over this backend's own pool, each part single-threaded in OpenBLAS: OpenBLAS's
  // own threads spin (sched_yield) for a while after every call, and on a small machine that spin
  // took a quarter of the cores from the attention running between GEMMs.
  openblas_set_num_threads(1);
}

Tensor CpuBackend::alloc(DType dtype, int64_t rows, int64_t cols) {
  LSERVE_ASSERT(rows >= 0 && cols >= 0);
  Tensor t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  const size_t bytes = std::max<size_t>(64, (t.nbytes() + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw OutOfMemoryError(fmt::format("cannot allocate {} bytes", bytes));
  t.owner = std::shared_ptr<void>(p, std::free);
  t.data = p;
  return t;
}

Tensor CpuBackend::upload(const float* host, int64_t rows, int64_t cols) {
  Tensor t = alloc(DType::F32, rows, cols);
  std::memcpy(t.data, host, t.nbytes());
  return t;
}

Tensor CpuBackend::random(int64_t rows, int64_t cols, uint64_t seed, float scale) {
  Tensor t = alloc(DType::F32, rows, cols);
  fill_random(t, seed, scale);
  return t;
}

void CpuBackend::fill(Tensor& t, float value) {
  check_f32(t, "fill");
  std::fill_n(t.as<float>(), t.numel(), value);
}

void CpuBackend::fill_random(Tensor& t, uint64_t seed, float scale) {
  check_f32(t, "fill_random");
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  float* p = t.as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
}

void CpuBackend::to_host(const Tensor& t, float* host) {
  if (t.dtype == DType::I32) {  // tables (selections, counts), as the CUDA backend converts them
    const int32_t* src = t.as<int32_t>();
    for (int64_t i = 0; i < t.numel(); ++i) host[i] = static_cast<float>(src[i]);
    return;
  }
  check_f32(t, "to_host");
  std::memcpy(host, t.data, t.nbytes());
}

void CpuBackend::write(Tensor& t, const void* host_bytes) {
  std::memcpy(t.data, host_bytes, t.nbytes());
}

void CpuBackend::embed(const Tensor& table, std::span<const int32_t> ids, Tensor& out) {
  LSERVE_ASSERT(out.rows == static_cast<int64_t>(ids.size()) && out.cols == table.cols);
  for (size_t i = 0; i < ids.size(); ++i) {
    LSERVE_CHECK(ids[i] >= 0 && ids[i] < table.rows, "token id {} is outside the vocabulary ({})",
                 ids[i], table.rows);
    std::memcpy(out.as<float>() + i * out.cols, table.as<float>() + ids[i] * table.cols,
                table.cols * sizeof(float));
  }
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  LSERVE_ASSERT(x.cols == w.cols && out.rows == x.rows && out.cols == x.cols);
  const int64_t d = x.cols;
  pool_.parallel_for(x.rows, [&](int64_t r) {
    const float* xr = x.as<float>() + r * d;
    float* o = out.as<float>() + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / d) + eps);
    for (int64_t i = 0; i < d; ++i) o[i] = xr[i] * inv * w.as<float>()[i];
  });
}

void CpuBackend::matmul(const Tensor& x, const Tensor& w, Tensor& out, bool accumulate) {
  LSERVE_ASSERT(x.cols == w.cols && out.rows == x.rows && out.cols == w.rows);
  check_f32(x, "matmul");
  check_f32(w, "matmul");
  const float beta = accumulate ? 1.0f : 0.0f;
  // Output columns (weight rows) in one contiguous block per thread, rounded to 16 so each block
  // starts on a cache line of the output.
  const int64_t n = w.rows, k = w.cols;
  const int64_t parts = std::min<int64_t>(pool_.size(), std::max<int64_t>(1, n / 64));
  const int64_t block = ((n + parts - 1) / parts + 15) / 16 * 16;
  pool_.parallel_for((n + block - 1) / block, [&](int64_t part) {
    const int64_t n0 = part * block, nb = std::min(block, n - n0);
    const float* wp = w.as<float>() + n0 * k;
    float* op = out.as<float>() + n0;
    if (x.rows == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(nb), static_cast<int>(k), 1.0f, wp,
                  static_cast<int>(k), x.as<float>(), 1, beta, op, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(x.rows),
                  static_cast<int>(nb), static_cast<int>(k), 1.0f, x.as<float>(),
                  static_cast<int>(k), wp, static_cast<int>(k), beta, op,
                  static_cast<int>(out.cols));
    }
  });
}

void CpuBackend::add_bias(Tensor& x, const Tensor& bias) {
  LSERVE_ASSERT(bias.numel() == x.cols);
  for (int64_t r = 0; r < x.rows; ++r) {
    float* xr = x.as<float>() + r * x.cols;
    for (int64_t i = 0; i < x.cols; ++i) xr[i] += bias.as<float>()[i];
  }
}

void CpuBackend::add(Tensor& x, const Tensor& y) {
  LSERVE_ASSERT(x.numel() == y.numel());
  float* a = x.as<float>();
  const float* b = y.as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) a[i] += b[i];
}

void CpuBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  LSERVE_ASSERT(gate.numel() == up.numel() && out.numel() == gate.numel());
  const int64_t cols = gate.cols;
  pool_.parallel_for((gate.rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int64_t r0 = task * kRowsPerTask, r1 = std::min(gate.rows, r0 + kRowsPerTask);
    for (int64_t i = r0 * cols; i < r1 * cols; ++i) {
      const float g = gate.as<float>()[i];
      out.as<float>()[i] = g / (1.0f + std::exp(-g)) * up.as<float>()[i];
    }
  });
}

void CpuBackend::scale(Tensor& x, float s) {
  float* a = x.as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) a[i] *= s;
}

void CpuBackend::gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  LSERVE_ASSERT(gate.numel() == up.numel() && out.numel() == gate.numel());
  const int64_t cols = gate.cols;
  // gelu(g) ~ g/2 (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), the approximation Gemma was trained
  // with.
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  pool_.parallel_for((gate.rows + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task) {
    const int64_t r0 = task * kRowsPerTask, r1 = std::min(gate.rows, r0 + kRowsPerTask);
    for (int64_t i = r0 * cols; i < r1 * cols; ++i) {
      const float g = gate.as<float>()[i];
      const float t = std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g));
      out.as<float>()[i] = 0.5f * g * (1.0f + t) * up.as<float>()[i];
    }
  });
}

void CpuBackend::gather_rows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  LSERVE_ASSERT(out.rows == static_cast<int64_t>(rows.size()) && out.cols == x.cols);
  for (size_t r = 0; r < rows.size(); ++r) {
    LSERVE_ASSERT(rows[r] >= 0 && rows[r] < x.rows);
    std::memcpy(out.as<float>() + r * x.cols, x.as<float>() + rows[r] * x.cols,
                x.cols * sizeof(float));
  }
}

}  // namespace lserve

namespace lserve {

void CpuBackend::sample(const Tensor& logits, const StepPlan& plan) {
  check_f32(logits, "sample");
  LSERVE_ASSERT(static_cast<int64_t>(plan.sampling.size()) >= logits.rows);
  sampled_.resize(static_cast<size_t>(logits.rows));
  pool_.parallel_for(logits.rows, [&](int64_t r) {
    const SampleRow& row = plan.sampling[r];
    std::span<float> l(logits.as<float>() + r * logits.cols, static_cast<size_t>(logits.cols));
    std::span<const LogitEdit> edits(plan.logit_edits.data() + row.edit_begin,
                                     static_cast<size_t>(row.edit_end - row.edit_begin));
    sampled_[r] = sample_row(l, row, edits);
  });
}

}  // namespace lserve
