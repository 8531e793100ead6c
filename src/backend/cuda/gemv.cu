#include "backend/cuda/gemv.h"

#include <algorithm>
#include <climits>

#include "backend/cuda/kernels/gemv.cuh"
#include "backend/cuda/launch_kernel.cuh"

namespace lserve::cuda {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <int NT, int MT, int WARPS, int UNROLL, typename OutT>
cudaError_t launch_tile(const GemvParams& p, unsigned grid, Stream st) {
  return launch_kernel(gemv_kernel<NT, MT, WARPS, UNROLL, OutT>, grid, 32 * WARPS, 0, st, p);
}

template <int NT, int MT, int WARPS, int UNROLL>
cudaError_t by_out(const GemvParams& p, unsigned grid, bool out_f32, Stream st) {
  return out_f32 ? launch_tile<NT, MT, WARPS, UNROLL, float>(p, grid, st)
                 : launch_tile<NT, MT, WARPS, UNROLL, bf16>(p, grid, st);
}

constexpr int config_key(int mt, int warps, int unroll) { return (mt * 16 + warps) * 16 + unroll; }

// Runtime values to the instantiated configurations: exactly those of gemv_configs() (checked
// first; config_key is unique for fields under 16). Anything else is an error, never a fallback.
template <int NT>
cudaError_t by_config(const GemvParams& p, unsigned grid, const GemvConfig& c, bool out_f32,
                      Stream st) {
  switch (config_key(c.mt, c.warps, c.unroll)) {
    case config_key(1, 4, 4):
      return by_out<NT, 1, 4, 4>(p, grid, out_f32, st);
    case config_key(1, 8, 4):
      return by_out<NT, 1, 8, 4>(p, grid, out_f32, st);
    case config_key(2, 4, 4):
      return by_out<NT, 2, 4, 4>(p, grid, out_f32, st);
    case config_key(2, 8, 4):
      return by_out<NT, 2, 8, 4>(p, grid, out_f32, st);
    case config_key(1, 8, 2):
      return by_out<NT, 1, 8, 2>(p, grid, out_f32, st);
    case config_key(2, 8, 2):
      return by_out<NT, 2, 8, 2>(p, grid, out_f32, st);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

// Measured on the H200 (bench/gemv_bench, cold L2): {1, 8, 2} wins at n <= 8 on the QKV, O,
// gate/up and down shapes; {2, 8, 2} on the LM head and at n = 16..32; {1, 4, 4} at n = 32 with
// few rows; {1, 8, 4} and {2, 8, 4} for the down projection (k = 14336). {2, 4, 4} is rarely far
// behind. Unroll 8, and 4 m-tiles per warp (too few CTAs, no gain at n = 32), lost everywhere.
const std::vector<GemvConfig>& gemv_configs() {
  static const std::vector<GemvConfig> configs = {
      {1, 8, 2}, {1, 8, 4}, {1, 4, 4}, {2, 8, 4}, {2, 4, 4}, {2, 8, 2},
  };
  return configs;
}

cudaError_t launch_gemv(const void* x, int64_t ldx, int n, int64_t k, const GemvTarget* targets,
                        int n_targets, bool out_f32, bool accumulate, const GemvConfig& cfg,
                        Stream st) {
  const auto& configs = gemv_configs();
  const bool instantiated = std::any_of(configs.begin(), configs.end(), [&](const GemvConfig& c) {
    return c.mt == cfg.mt && c.warps == cfg.warps && c.unroll == cfg.unroll;
  });
  if (!instantiated || n < 1 || n > kGemvMaxTokens || k <= 0 || k % kGemvKBlock != 0 ||
      k / kGemvKBlock > INT_MAX || ldx < k || ldx % 8 != 0 || x == nullptr || !aligned16(x) ||
      targets == nullptr || n_targets < 1 || n_targets > kGemvMaxTargets) {
    return cudaErrorInvalidValue;
  }
  GemvParams p{};
  p.x = static_cast<const bf16*>(x);
  p.ldx = ldx;
  p.k = k;
  p.n = n;
  p.n_targets = n_targets;
  p.accumulate = accumulate ? 1 : 0;
  const int64_t rows_per_cta = 16 * int64_t{cfg.mt};
  const size_t out_bytes = out_f32 ? sizeof(float) : sizeof(bf16);
  int64_t ctas = 0;
  for (int i = 0; i < n_targets; ++i) {
    const GemvTarget& t = targets[i];
    if (t.rows < 0 || (t.rows > 0 && (t.w == nullptr || !aligned16(t.w) || t.out == nullptr ||
                                      reinterpret_cast<uintptr_t>(t.out) % out_bytes != 0 ||
                                      t.ld_out < t.rows))) {
      return cudaErrorInvalidValue;
    }
    ctas += (t.rows + rows_per_cta - 1) / rows_per_cta;
    if (ctas > INT_MAX) return cudaErrorInvalidValue;
    p.t[i] = {static_cast<const bf16*>(t.w), t.out, t.rows, t.ld_out};
    p.cta_end[i] = static_cast<int32_t>(ctas);
  }
  if (ctas == 0) return cudaSuccess;
  const auto grid = static_cast<unsigned>(ctas);
  switch ((n + 7) / 8) {
    case 1:
      return by_config<1>(p, grid, cfg, out_f32, st);
    case 2:
      return by_config<2>(p, grid, cfg, out_f32, st);
    case 3:
      return by_config<3>(p, grid, cfg, out_f32, st);
    case 4:
      return by_config<4>(p, grid, cfg, out_f32, st);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace lserve::cuda
