// Dynamic block-sparse prefill for retrieval heads (XAttention's antidiagonal scoring): which key
// blocks a block of prefill queries attends to. Semantics in docs/sparse-attention.md ("Dynamic
// prefill sparsity"); the CPU attention op applies it and the tests check against it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lserve {

// Queries and keys are grouped in blocks of this many positions (query block qb holds positions
// [qb * kPrefillBlock, (qb + 1) * kPrefillBlock)); the estimate samples every kAntidiagStride-th
// antidiagonal of each block pair.
constexpr int kPrefillBlock = 128;
constexpr int kAntidiagStride = 8;
// How a query block's shares are estimated (--prefill-estimate): kAntidiagonal (the default) or
// kSampledRows (every kSampledRowStride-th query scored exactly against every key: as many
// products as the antidiagonal's, 8x its exponentials).
enum class PrefillEstimate { kAntidiagonal, kSampledRows };
constexpr int kSampledRowStride = 8;
std::string_view prefill_estimate_name(PrefillEstimate e);
PrefillEstimate parse_prefill_estimate(const std::string& name);  // throws Error if unknown

// Prefill chunks of fewer queries than this attend densely (the estimate would cost more than
// it saves; every backend and the tests' reference apply the same rule).
constexpr int kSparsePrefillMinQueries = 5;

// One query block of one KV head's group, and the keys before its end.
struct PrefillBlockQuery {
  const float* q = nullptr;  // row r, query head g of the group: q + r * q_stride + g * head_dim
  int64_t q_stride = 0;
  const int32_t* q_pos = nullptr;  // [nq], ascending, all in one block
  int nq = 0;
  int group = 1;  // query heads sharing the keys
  int head_dim = 0;
  const float* k = nullptr;  // [nk, head_dim]: the keys of positions 0 .. nk - 1
  int nk = 0;
  float scale = 1.0f;  // the attention's score scale (1 / sqrt(head_dim))
};

// The estimated share of the block's attention mass on each key block 0 .. qb (qb = the queries'
// block), summing to 1: with S = kAntidiagStride, query row a of the compressed matrix is the
// concatenation of the queries at positions a S + S - 1, ..., a S (reversed), key column b that
// of the keys at b S, ..., b S + S - 1 (absent rows are zeros); the compressed score scale / S *
// <row a, column b> is softmaxed over the columns b <= a, and the probabilities are summed per key
// block and averaged over the compressed rows present and the group's query heads. kSampledRows:
// the rows are the queries at positions p with p % kSampledRowStride == kSampledRowStride - 1,
// and the block's last query, each scored exactly (scale * <q, k>) against keys 0 .. p; the same
// softmax, sums and averages.
std::vector<double> prefill_block_mass(const PrefillBlockQuery& in,
                                       PrefillEstimate estimate = PrefillEstimate::kAntidiagonal);

// The key blocks kept for a mass vector (ascending): the fewest of the largest shares (ties: the
// lower block first) whose sum reaches `threshold`, plus block 0 (the sink) and the diagonal
// block (the last); every block when threshold >= 1.
std::vector<int32_t> keep_prefill_blocks(const std::vector<double>& mass, double threshold);

}  // namespace lserve
