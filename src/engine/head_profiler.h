// Training-free ranking of KV heads by how much they need full attention (docs/sparse-attention.md
// explains the method). On passkey prompts of several lengths, each KV head's full attention
// output at the last positions (the question) is compared with what the same head would output
// attending only to the sink and the local window; heads whose outputs change most are the ones
// retrieval depends on. Writes DuoAttention's full_attention_heads.tsv format.
#pragma once

#include <functional>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "model/model.h"
#include "sparse/head_pattern.h"
#include "sparse/prefill_blocks.h"
#include "tokenizer/tokenizer.h"

namespace lserve {

struct HeadProfileOptions {
  std::vector<int> lengths = {1000, 2000, 3500};  // approximate prompt lengths, in tokens
  std::vector<double> depths = {0.1, 0.5, 0.9};   // where the passkey sits
  int probe_queries = 32;                         // last positions whose outputs are compared
  int sink_tokens = 128;                          // the streaming window being judged
  int local_tokens = 256;
  uint64_t seed = 0;
};

// One calibration prompt: its tokens, and how many of its last positions are probed (where the
// prompt asks for, or already holds, the retrieved answer).
struct CalibrationPrompt {
  std::vector<int32_t> tokens;
  int probe_queries = 32;
};

struct HeadProfile {
  HeadPattern pattern;  // gates: mean relative error scaled to [0, 1] (1 = needs full attention)
  std::vector<std::vector<double>> error;  // [layer][kv_head] mean relative output error
  int prompts = 0;
};

// On the given prompts (options.lengths, depths and probe_queries are not used).
HeadProfile profile_heads(Model& model, CpuBackend& backend,
                          const std::vector<CalibrationPrompt>& prompts,
                          const HeadProfileOptions& options,
                          const std::function<void(int done, int total)>& progress);
// How much of the probed queries' true attention dynamic prefill sparsity keeps
// (sparse/prefill_blocks.h), per threshold: for every probed row, query head and KV head of the
// layers without a model window, the rows' query block is estimated from the chunk's rows of
// that block, as prefill does, and the share of the row's exact softmax mass on the kept key
// blocks is recorded. Probed rows are where retrieval happens (the answer of a task prompt).
// `estimate`: the shares the kept blocks are chosen from (sparse/prefill_blocks.h).
struct PrefillRecall {
  double threshold = 0;
  double mean = 0;    // mean kept share of the true attention
  double min = 1;     // the smallest
  double below = 0;   // fraction of (row, query head) pairs whose kept share is under threshold
  double blocks = 0;  // mean share of the causal key blocks kept
  int64_t rows = 0;   // (row, query head) pairs measured
};
std::vector<PrefillRecall> prefill_recall(Model& model, CpuBackend& backend,
                                          const std::vector<CalibrationPrompt>& prompts,
                                          const std::vector<double>& thresholds,
                                          PrefillEstimate estimate,
                                          const std::function<void(int done, int total)>& progress);

// On passkey prompts of options.lengths x options.depths.
HeadProfile profile_heads(Model& model, CpuBackend& backend, const Tokenizer& tokenizer,
                          const HeadProfileOptions& options,
                          const std::function<void(int done, int total)>& progress);

}  // namespace lserve
