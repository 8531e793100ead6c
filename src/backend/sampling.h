// Token sampling as a backend op: plain per-row parameter structs (copied to the device as they
// are, so no CUDA or STL types), and the host reference of the algorithm that every backend
// implements (the CPU backend runs it; the CUDA kernel is tested against it).
//
// The algorithm, per row of logits (ids >= vocab are never sampled):
//  1. logit edits (logit bias, repetition / presence / frequency penalties, precomputed per token
//     by the engine): l = l + bias; if rep != 1: l = l > 0 ? l / rep : l * rep; l -= sub.
//  2. temperature <= 0: the first index of the largest logit (greedy).
//  3. otherwise, with m the largest logit and w_i = e^((l_i - m) / temperature) (sample_w):
//     - top-k: the k = min(top_k, vocab) largest logits (top_k 0: all), ties to the lower id;
//     - min-p: of those, keep w_i >= min_p (the best token always stays);
//     - top-p: order the kept tokens by (logit desc, id asc) and keep the shortest prefix whose
//       weight reaches top_p * Z, Z the total weight of the top-k set (top_p >= 1: all kept);
//     - draw u in [0, 1) from Philox-4x32-10 (key = seed, counter = {counter, 0, 0, 0}) and
//       return the kept token where the running sum of weights, in id order, first exceeds
//       u * (their total).
//     Weights are summed in 2^-40 fixed point (W_i = floor(w_i * 2^40)), so every sum and
//     comparison is exact integer arithmetic, identical on every backend and in every order; the
//     exact definitions are the helpers at the end of this file, shared by every backend.
//  4. logprobs >= 0: the log-softmax of the raw logits (before step 1, over ids < vocab) at the
//     sampled token, and the `logprobs` largest (ties to the lower id).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>

#include "core/philox.h"

namespace lserve {

constexpr int kMaxTopLogprobs = 20;

// One token's edit, applied in the order of the fields. A row's edits have strictly increasing
// tokens (a row whose edits do not gets token -1).
struct LogitEdit {
  int32_t token;
  float bias;         // added first (logit_bias)
  float rep_penalty;  // 1: none; else divides a positive logit, multiplies a negative one
  float sub;          // subtracted last (frequency_penalty * count + presence_penalty)
};

// How to sample one logits row.
struct SampleRow {
  float temperature;             // <= 0: greedy
  int32_t top_k;                 // 0: off
  float top_p;                   // >= 1: off
  float min_p;                   // 0: off
  uint32_t seed_lo, seed_hi;     // Philox key
  uint32_t counter;              // Philox counter: the sequence's draw index (tokens generated)
  int32_t vocab;                 // ids >= vocab are never sampled (padded model vocabularies)
  int32_t edit_begin, edit_end;  // this row's LogitEdits in the step's edit list
  int32_t logprobs;              // -1: none; 0..kMaxTopLogprobs: top alternatives to report
  int32_t pad;
};

struct SampledToken {
  int32_t token;
  float logprob;  // log-softmax of the raw logits at `token` (when logprobs >= 0)
  int32_t n_top;
  int32_t top_ids[kMaxTopLogprobs];
  float top_logprobs[kMaxTopLogprobs];
};

// The reference: samples `logits` (one row, modified in place by the edits) as described above.
SampledToken sample_row(std::span<float> logits, const SampleRow& row,
                        std::span<const LogitEdit> edits);

// The arithmetic of the algorithm, shared by the host reference and the kernels so that both make
// the same integer decisions from the same logits.
namespace sampling {

// IEEE single operations that no compiler may fuse into an FMA (nvcc contracts a * b + c by
// default): host and device then round every step alike.
LSERVE_HD inline float add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
LSERVE_HD inline float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
LSERVE_HD inline float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
LSERVE_HD inline float div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

LSERVE_HD inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return std::bit_cast<uint32_t>(f);
#endif
}
LSERVE_HD inline float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  return std::bit_cast<float>(b);
#endif
}

// NaN counts as -inf, and -0 as +0 (equal logits must tie).
LSERVE_HD inline float clean_logit(float l) {
  if (l != l) return -INFINITY;
  return l == 0.0f ? 0.0f : l;
}

// Order-preserving key of a logit (after clean_logit): all selection and tie-breaking compares
// keys, so that it is exact integer work.
LSERVE_HD inline uint32_t logit_key(float l) {
  const uint32_t b = float_bits(clean_logit(l));
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
LSERVE_HD inline float key_logit(uint32_t key) {
  return bits_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Step 1 for one token.
LSERVE_HD inline float edit_logit(float l, const LogitEdit& e) {
  l = add(l, e.bias);
  if (e.rep_penalty != 1.0f) l = l > 0.0f ? div(l, e.rep_penalty) : mul(l, e.rep_penalty);
  return sub(l, e.sub);
}

// e^x for x <= 0 (larger x gives 1, NaN 0), within about 2 ulp, from IEEE + and * alone (no
// library expf, whose last bits differ between the host and CUDA): the weights below must be
// bit-identical on every backend. Results under the normal range flush to 0; they are far below
// the 2^-40 weight unit anyway.
LSERVE_HD inline float sample_exp(float x) {
  if (!(x > -87.0f)) return 0.0f;
  if (x >= 0.0f) return 1.0f;
  // x = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite: k * kLn2Hi is exact for |k| < 2^9). Adding and
  // subtracting 1.5 * 2^23 rounds to the nearest integer.
  constexpr float kLog2e = 1.44269504f, kLn2Hi = 0.693145751953125f, kLn2Lo = 1.42860677e-6f;
  constexpr float kRound = 12582912.0f;
  const float k = sub(add(mul(x, kLog2e), kRound), kRound);
  const float r = sub(sub(x, mul(k, kLn2Hi)), mul(k, kLn2Lo));
  // Taylor series to r^7 / 7!: the truncation error is under 1e-8 relative.
  float p = 1.0f / 5040.0f;
  p = add(mul(p, r), 1.0f / 720.0f);
  p = add(mul(p, r), 1.0f / 120.0f);
  p = add(mul(p, r), 1.0f / 24.0f);
  p = add(mul(p, r), 1.0f / 6.0f);
  p = add(mul(p, r), 0.5f);
  p = add(mul(p, r), 1.0f);
  p = add(mul(p, r), 1.0f);
  // k is in [-126, 0], so 2^k is a normal float.
  return mul(p, bits_float(static_cast<uint32_t>(static_cast<int>(k) + 127) << 23));
}

// Whether a row samples greedily (a NaN temperature too).
LSERVE_HD inline bool is_greedy(const SampleRow& row) { return !(row.temperature > 0.0f); }

// How many tokens top-k keeps of n (all when it is off).
LSERVE_HD inline int top_k_count(const SampleRow& row, int n) {
  return row.top_k > 0 && row.top_k < n ? row.top_k : n;
}

// w = e^((l - m) / temperature) for cleaned logits l <= m (m the largest): exactly 1 at the
// largest, also where m is infinite.
LSERVE_HD inline float sample_w(float l, float m, float temperature) {
  if (l == m) return 1.0f;
  return sample_exp(div(sub(l, m), temperature));
}

// W = floor(w * 2^40): the fixed-point weight every sum and draw uses. At most 2^40 a token, so a
// sum over 2^18 tokens fits 64 bits.
LSERVE_HD inline uint64_t fixed_weight(float w) {
  return static_cast<uint64_t>(static_cast<double>(w) * 1099511627776.0);
}

// min-p keeps w >= this (0: off; over 1 would drop the best token, so 1 at most).
LSERVE_HD inline float min_p_floor(float min_p) {
  return min_p > 0.0f ? (min_p < 1.0f ? min_p : 1.0f) : 0.0f;
}

// The weight the top-p prefix must reach, from the total weight z of the top-k set; 0 when top-p
// is off. At least 1: the shortest prefix is never empty.
LSERVE_HD inline uint64_t top_p_target(float top_p, uint64_t z) {
  if (!(top_p < 1.0f)) return 0;
  if (!(top_p > 0.0f)) return 1;
  const uint64_t t = static_cast<uint64_t>(static_cast<double>(top_p) * static_cast<double>(z));
  return t > 0 ? t : 1;
}

// The draw: the kept token whose inclusive running weight (in id order) first exceeds this,
// given their total s > 0. (Double products round alike everywhere: the target is the same on
// every backend.)
LSERVE_HD inline uint64_t draw_target(const SampleRow& row, uint64_t s) {
  const uint32_t x = philox_u32(row.seed_lo, row.seed_hi, row.counter);
  const double u = static_cast<double>(x >> 8) * (1.0 / 16777216.0);
  const uint64_t t = static_cast<uint64_t>(u * static_cast<double>(s));
  return t < s ? t : s - 1;
}

}  // namespace sampling

}  // namespace lserve
