// The engine loop: accepts requests, schedules a step, runs the model, samples, detokenizes and
// reports what each sequence produced. Single-threaded; the server drives it from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "kv/block_manager.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "model/model_loader.h"
#include "sparse/kv_traffic.h"
#include "sparse/sparse_config.h"
#include "tokenizer/tokenizer.h"

namespace lserve {

struct EngineConfig {
  SchedulerConfig scheduler;
  SparseAttentionConfig sparse;
  int max_model_len = 0;     // 0: the model's context length
  int num_pages = 0;         // retrieval pool pages; 0: derived from kv_cache_bytes
  int num_stream_pages = 0;  // streaming pool pages; 0: derived from kv_cache_bytes
  int64_t kv_cache_bytes = 1ll << 30;
  bool enforce_eager = false;  // no recorded (CUDA graph) decode steps
  KvDtype kv_dtype = KvDtype::kAuto;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t prompt_tokens = 0;  // prefilled (including recomputation after preemption)
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  double prefill_seconds = 0;  // model time of steps that contained prefill tokens
  double decode_seconds = 0;   // model time of decode-only steps
  int64_t decode_steps = 0;
  int64_t decode_tokens = 0;
  KvTraffic decode_kv;        // summed over decode tokens (divide by decode_tokens)
  int peak_pages = 0;         // retrieval pool pages in use, maximum over steps
  int peak_stream_pages = 0;  // streaming pool pages in use, maximum over steps
};

class Engine {
 public:
  // Takes ownership of the backend and the loaded model (its tokenizer spec is required).
  Engine(std::unique_ptr<Backend> backend, LoadedModel model, const EngineConfig& config);
  ~Engine();

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& model_config() const { return model_->config(); }
  int max_model_len() const { return max_model_len_; }
  const BlockManager& blocks() const { return blocks_; }
  const KvCache& kv_cache() const { return *cache_; }
  const EngineStats& stats() const { return stats_; }
  const PrefixCacheStats& prefix_cache_stats() const { return scheduler_.prefix_cache_stats(); }
  const SparseAttentionConfig& sparse() const { return cache_->sparse(); }
  Backend& backend() { return *backend_; }
  const Backend& backend() const { return *backend_; }
  const RunnerStats& runner_stats() const { return runner_->stats(); }

  // Throws Error naming the problem when `request` cannot be served. Reads only state fixed at
  // construction, so other threads may call it while the engine thread steps.
  void validate(const Request& request) const;
  // Queues a request; throws Error (nothing queued) when it cannot be served.
  int64_t submit(Request request);
  // Runs one step and returns what changed; finished sequences are forgotten after reporting.
  std::vector<SeqOutput> step();
  // Fills every KV page (keys, values, page statistics) with random values: the context of
  // requests with synthetic_prefill (benchmarks).
  void fill_kv_random(uint64_t seed);
  // Stops a sequence and frees its pages at once; its final output comes from the next step().
  bool cancel(int64_t id);
  bool has_work() const { return scheduler_.has_work() || !cancelled_.empty(); }
  size_t num_waiting() const { return scheduler_.num_waiting(); }
  size_t num_running() const { return scheduler_.num_running(); }

 private:
  void on_token(Sequence& seq, int32_t token, SeqOutput& out);
  void finish(Sequence& seq, FinishReason reason, SeqOutput& out);
  bool is_stop_token(const Sequence& seq, int32_t token) const;

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<KvCache> cache_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::unique_ptr<ModelRunner> runner_;
  int max_model_len_ = 0;
  std::vector<int32_t> stop_ids_;
  int64_t next_id_ = 1;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;
  std::vector<SeqOutput> cancelled_;
  EngineStats stats_;
};

}  // namespace lserve
