#include "kv/kv_dtype.h"

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "core/error.h"

namespace lserve {

std::string_view kv_dtype_name(KvDtype t) {
  switch (t) {
    case KvDtype::kAuto:
      return "auto";
    case KvDtype::kBf16:
      return "bf16";
    case KvDtype::kFp8:
      return "fp8";
  }
  return "?";
}

KvDtype parse_kv_dtype(std::string_view name) {
  for (KvDtype t : {KvDtype::kAuto, KvDtype::kBf16, KvDtype::kFp8}) {
    if (name == kv_dtype_name(t)) return t;
  }
  fail("unknown KV cache dtype '{}' (auto, bf16 or fp8)", name);
}

float round_to_e4m3(float x) {
  if (std::isnan(x)) return x;
  const float a = std::fabs(x);
  constexpr float kMax = 448.0f;
  if (a >= kMax) return std::copysign(kMax, x);
  // Quantum of a's binade: 3 mantissa bits below the leading one; subnormals (below 2^-6) share
  // the smallest normal binade's quantum 2^-9.
  int e = 0;
  std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1): the leading bit is 2^(e-1)
  const int lead = std::max(e - 1, -6);
  const float quantum = std::ldexp(1.0f, lead - 3);
  // a / quantum is exact (a power of two) and below 2^24, so nearbyint rounds it to even
  // exactly; a carry into the next binade lands on a representable value.
  const float r = std::nearbyint(a / quantum) * quantum;
  return std::copysign(std::min(r, kMax), x);
}

KvRowBytes kv_row_bytes(DType storage, DType stats, int head_dim) {
  KvRowBytes b;
  b.kv = static_cast<int64_t>(head_dim) * static_cast<int64_t>(dtype_size(storage)) +
         (storage == DType::F8E4M3 ? 4 : 0);
  b.stats = static_cast<int64_t>(head_dim) * static_cast<int64_t>(dtype_size(stats));
  return b;
}

void round_kv_row(KvDtype t, const float* in, float* out, int d) {
  switch (t) {
    case KvDtype::kAuto:
      if (in != out) std::copy(in, in + d, out);
      return;
    case KvDtype::kBf16:
      for (int i = 0; i < d; ++i) out[i] = bf16_to_f32(f32_to_bf16(in[i]));
      return;
    case KvDtype::kFp8: {
      float amax = 0.0f;
      for (int i = 0; i < d; ++i) amax = std::max(amax, std::fabs(in[i]));
      const float s = amax > 0.0f && std::isfinite(amax) ? amax / 448.0f : 1.0f;
      for (int i = 0; i < d; ++i) out[i] = round_to_e4m3(in[i] / s) * s;
      return;
    }
  }
}

}  // namespace lserve
