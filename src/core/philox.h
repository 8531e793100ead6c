// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based generator, so a draw is a pure function of (key, counter) and the host and every
// device produce the same numbers without carrying generator state between steps.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace lserve {

namespace philox_detail {

constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

LSERVE_HD inline void mul_hi_lo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  *lo = a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  *lo = static_cast<uint32_t>(p);
#endif
}

}  // namespace philox_detail

// out = Philox-4x32-10(ctr, key); out may alias ctr.
LSERVE_HD inline void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  using namespace philox_detail;
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(kMul0, c0, &hi0, &lo0);
    mul_hi_lo(kMul1, c2, &hi1, &lo1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    // The key schedule bumps between rounds; the value after the last round is unused.
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

// The first word of Philox-4x32-10 at counter {counter, 0, 0, 0}, key {seed_lo, seed_hi}.
LSERVE_HD inline uint32_t philox_u32(uint32_t seed_lo, uint32_t seed_hi, uint32_t counter) {
  const uint32_t ctr[4] = {counter, 0u, 0u, 0u};
  const uint32_t key[2] = {seed_lo, seed_hi};
  uint32_t out[4];
  philox4x32_10(ctr, key, out);
  return out[0];
}

}  // namespace lserve
