// What the KV cache stores: its element type and the rounding every backend applies on append.
// The CPU backend keeps f32 pools and applies the same rounding (emulation), so it stays the
// reference for devices that store the rounded type natively.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace lserve {

enum class KvDtype {
  kAuto,  // the backend's compute type (f32 on the CPU, bf16 on CUDA)
  kBf16,  // bf16 (round to nearest even)
  // FP8 E4M3 (OCP, "e4m3fn": max 448, no infinities) with one f32 scale per (token, KV head):
  // s = max|x| / 448 over the head's d values, stored value round_e4m3(x / s) * s. A scale per
  // token needs no calibration and never requantizes earlier tokens (a per-page scale would
  // have to grow as a page fills); it costs 4 bytes per 128 (K or V) bytes at head_dim 128, and
  // on a device it folds into the softmax: a key's scale multiplies its score, a value's its
  // probability, so no element is dequantized twice.
  kFp8,
};

std::string_view kv_dtype_name(KvDtype t);
// "auto", "bf16" or "fp8"; Error otherwise.
KvDtype parse_kv_dtype(std::string_view name);

// The value FP8 E4M3 stores for x: round to nearest even, saturating at +-448 (no infinities);
// NaN stays NaN.
float round_to_e4m3(float x);

// Bytes of one stored K or V row (one token of one head) and of one key-bounds row, from what the
// backend stores: what memory planning and the KV traffic accounting count.
struct KvRowBytes {
  int64_t kv = 0;     // head_dim elements, plus the row's f32 scale where the pool holds fp8
  int64_t stats = 0;  // one kmin or kmax row (the backend's compute dtype)
};
KvRowBytes kv_row_bytes(DType storage, DType stats, int head_dim);

// in[0, d) -> out[0, d) as a KV row of one (token, head) is stored under `t` (in == out is fine).
void round_kv_row(KvDtype t, const float* in, float* out, int d);

}  // namespace lserve
