// Flags shared by the commands that run a model, and the engine they build.
#pragma once

#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/generation_config.h"
#include "engine/sampling_params.h"
#include "eval/tasks.h"

namespace lserve::app {

struct ModelOptions {
  std::string model = "default";
  std::string load_format = "auto";
  std::string device = "auto";
  int n_gpu_layers = -1;  // llama.cpp's -ngl: > 0 means cuda, 0 cpu, -1 not given
  int threads = 0;        // 0: all cores
  int max_model_len = 0;
  int kv_cache_mib = 0;
  double gpu_memory_utilization = 0.9;
  std::string kv_cache_dtype = "auto";
  int max_num_seqs = 64;
  int max_num_batched_tokens = 2048;
  uint64_t dummy_seed = 0;
  bool enforce_eager = false;
  bool enable_prefix_caching = false;  // `serve` turns it on before its flags are parsed
  SparseAttentionConfig sparse;
  std::string granularity = "kv-head";
  std::string prefill_estimate = "antidiagonal";
};

// Model, device, memory and batching flags, plus the sparse-attention flags.
void add_model_options(CLI::App& cmd, ModelOptions& o);
void add_sparse_options(CLI::App& cmd, ModelOptions& o);
void add_sampling_options(CLI::App& cmd, SamplingParams& p, std::string& seed_text);
// --generation-config auto|vllm, for the commands that sample (generate, serve).
void add_generation_config_option(CLI::App& cmd, std::string& mode);
// The sampling flags given on `cmd`'s command line: the model's defaults must not replace them.
ExplicitSamplingFields explicit_sampling_fields(const CLI::App& cmd);
// With mode auto, the generation_config.json of the model `o` names (a Hugging Face folder),
// logged; nothing for vllm, a GGUF file or a folder without one.
std::optional<GenerationConfig> model_generation_config(const std::string& mode,
                                                        const ModelOptions& o);
// Applies the textual --seed (empty = random) to `p`.
void apply_seed(const std::string& seed_text, SamplingParams& p);

// The backend for --device (cpu or cuda); a clear error when unavailable.
std::unique_ptr<Backend> make_backend(const std::string& device, int threads);

// Loads the model with progress on stderr and builds an engine on the chosen device.
std::unique_ptr<Engine> build_engine(const ModelOptions& o);

// Peak resident memory of this process in bytes (VmHWM), 0 when unknown.
int64_t peak_rss_bytes();

// The haystack `tasks` need: the essays (from `dir`, else $LSERVE_DATA_DIR/PaulGrahamEssays, else
// data/ in the source tree, where scripts/fetch-haystack.sh puts them) when a needle or niah task
// is among them, else the passkey filler.
eval::Haystack haystack_for(const std::vector<std::string>& tasks, const std::string& dir);

}  // namespace lserve::app
