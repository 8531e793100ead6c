// Dense attention of a few query rows over gathered keys, with a position-based visibility rule.
// Shared by the CPU attention op (dense and sparse modes) and the tests' reference.
#pragma once

#include <climits>
#include <cstdint>

#include "core/thread_pool.h"

namespace lserve {

// Key at position kp is visible to a query at position qp when kp <= qp and (kp < sink or
// kp > qp - window). sink = 0, window = INT_MAX is plain causal attention.
struct Visibility {
  int32_t sink = 0;
  int32_t window = INT_MAX;
  bool visible(int32_t kp, int32_t qp) const {
    return kp <= qp && (kp < sink || static_cast<int64_t>(kp) > static_cast<int64_t>(qp) - window);
  }
};

struct AttendArgs {
  const float* q = nullptr;  // [nq] rows of head_dim, row stride q_stride
  int64_t q_stride = 0;
  const int32_t* q_pos = nullptr;  // [nq]
  int nq = 0;
  const float* k = nullptr;        // [nk, head_dim] contiguous
  const float* v = nullptr;        // [nk, head_dim] contiguous
  const int32_t* k_pos = nullptr;  // [nk], ascending
  int nk = 0;
  int head_dim = 0;
  float scale = 1.0f;
  Visibility vis;
  float* out = nullptr;  // [nq] rows of head_dim, row stride out_stride
  int64_t out_stride = 0;
};

// out = softmax(scale * q k^T masked by vis) v in f32: GEMMs over row tiles of queries, the tiles
// spread over `pool`. For many query rows.
void attend(const AttendArgs& a, ThreadPool& pool);
// attend()'s GEMM tiles, all on the calling thread (for callers that spread other work).
void attend_serial(const AttendArgs& a);
// The same on the calling thread with vector loops; for a few query rows (decode).
void attend_direct(const AttendArgs& a);

}  // namespace lserve
