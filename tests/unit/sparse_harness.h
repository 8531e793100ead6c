// Drives the real Scheduler/BlockManager/KvCache with random Q/K/V (no model) and checks every
// attention output against an independent reference built from the visibility rules of
// docs/sparse-attention.md: an explicit mask over the whole history, a from-scratch Quest
// selector, dense softmax in double.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "backend/backend.h"
#include "engine/scheduler.h"
#include "kv/block_manager.h"
#include "kv/kv_cache.h"

namespace lserve::test {

struct SparseCase {
  int n_layers = 3;
  int n_kv_heads = 2;
  int group = 3;
  int head_dim = 64;
  int prompt_len = 97;
  int decode_steps = 20;
  int chunk = 37;                            // max_num_batched_tokens
  std::vector<std::vector<bool>> retrieval;  // [layer][kv_head]; empty: random
  // The model's own sliding window per layer (Gemma 3; 0: the layer is global), or empty. Every
  // head of a windowed layer is a streaming head of exactly that window with no sink, whatever
  // `retrieval` says (HeadMap::set_model_windows), set up as the engine does it.
  std::vector<int32_t> model_windows;
  SparseAttentionConfig sparse;
  int num_pages = 64;
  int num_stream_pages = 64;
  // If set, each decode step's per-layer device work (RoPE/append, page selection, attention) is
  // handed to it instead of run directly: the CUDA tests capture it in a CUDA graph and replay it.
  std::function<void(const std::function<void()>&)> run_decode_layer;
  // > 0: decode steps run device-planned (as recorded CUDA graph steps do), padded to this many
  // sequence slots.
  int pad_decode_to = 0;
  // Decode queries as a_t = p * a_{t-1} + sqrt(1 - p^2) * fresh noise (per layer), so successive
  // queries resemble each other as real ones do (cosine about p per step); 0: independent.
  double query_persistence = 0;
  // How the cache stores K/V; the reference rounds its history the same way (round_kv_row).
  KvDtype kv_dtype = KvDtype::kAuto;
};

class SparseHarness {
 public:
  SparseHarness(Backend& backend, const SparseCase& c, uint64_t seed);

  // Runs the prompt and the decode steps, checking each step; returns the largest difference
  // seen (absolute up to |o| = 1, relative beyond).
  double run(double tolerance);

  // What happened, for tests that check the schedule.
  std::vector<bool> refresh_flags;         // per decode step
  std::vector<int> stream_pages_per_step;  // streaming pages held after each step
  std::vector<int> pages_per_step;
  // Under sparse.prefill_sparsity: (query block, KV head) estimates made, and key blocks they
  // left out of the causal ones.
  int prefill_block_estimates = 0;
  int prefill_blocks_dropped = 0;
  int prefill_block_ties = 0;  // query rows matched by a rounding-close alternative kept set
  int ref_refreshes = 0;       // selection heads recomputed on the reuse clock
  int drift_refreshes = 0;     // ... and in between, because their query drifted
  int selection_ties = 0;      // refreshes where the backend broke a cutoff tie the other way
  // The backend's count of the key blocks prefill sparsity dropped since `before` agrees with
  // the reference's estimates: exactly, or within one block per estimate where some query rows
  // matched a rounding-close alternative kept set.
  void expect_block_counts(const Backend::PrefillBlockStats& before);
  KvCache& cache() { return *cache_; }
  Sequence& seq() { return seq_; }

 private:
  void check_step(const StepPlan& plan, int layer, const std::vector<float>& q,
                  const std::vector<float>& out, double tolerance, double& max_diff);
  // The reference's Quest score of every block (the current one included) and its choice: the
  // best token_budget / P - 1 older blocks plus the current one, ascending.
  std::vector<double> reference_block_scores(int layer, int sel_head, int32_t pos,
                                             const float* q_row);
  std::vector<int32_t> reference_selection(const std::vector<double>& block_score);
  // The selection row the backend stored for this step's sequence.
  std::vector<int32_t> backend_selection(const SeqStep& s, int layer, int sel_head);
  // The reference's choice, or the backend's where the two differ only between blocks whose
  // scores tie at the cutoff within rounding (then either is right; the attention check follows
  // the backend's). Any other difference fails the test.
  std::vector<int32_t> settle_ties(const std::vector<double>& scores,
                                   const std::vector<int32_t>& reference,
                                   const std::vector<int32_t>& backend);
  // The key blocks a retrieval head's query block keeps in this prefill step (the rows of the
  // step in block qb, estimated by sparse/prefill_blocks.h from this history's keys): the
  // reference's set first, then any set a float estimate could choose instead (a decision within
  // 1e-5 of flipping).
  std::vector<std::vector<int32_t>> prefill_kept_blocks(const SeqStep& s, int layer, int kv,
                                                        int32_t qb, const std::vector<float>& q);

  Backend& backend_;
  SparseCase c_;
  std::mt19937_64 rng_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<BlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  Sequence seq_;
  // History of post-RoPE keys and values: [layer][pos][kv_head * d].
  std::vector<std::vector<std::vector<float>>> k_hist_, v_hist_;
  // The reference selector's current choice: [layer][sel_head] -> blocks.
  std::vector<std::vector<std::vector<int32_t>>> ref_sel_;
  // The query rows each selection was made for ([layer][sel_head] -> rows of its query heads), and
  // the previous decode query per layer (query_persistence).
  std::vector<std::vector<std::vector<float>>> ref_sel_q_;
  std::vector<std::vector<float>> prev_q_;
  int decode_step_ = 0;
  bool ref_sel_valid_ = false;
};

}  // namespace lserve::test
