#include "options.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#ifdef LSERVE_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif
#include "core/error.h"
#include "core/log.h"
#include "model/model_loader.h"

namespace lserve::app {

void add_model_options(CLI::App& cmd, ModelOptions& o) {
  cmd.add_option("-m,--model", o.model,
                 "Model: a .gguf file, a Hugging Face folder (config.json + *.safetensors + "
                 "tokenizer.json), or 'default' (SmolLM2-135M-Instruct Q4_1, fetched by "
                 "scripts/fetch-model.sh)")
      ->capture_default_str();
  cmd.add_option("--load-format", o.load_format,
                 "How to read --model: auto (by path), gguf, hf, or dummy (random weights from a "
                 "config.json, for speed tests)")
      ->check(CLI::IsMember({"auto", "gguf", "hf", "safetensors", "dummy"}))
      ->capture_default_str();
  cmd.add_option("--dummy-seed", o.dummy_seed, "Seed of the random weights of --load-format dummy")
      ->capture_default_str();
  cmd.add_option("--device", o.device,
                 "Where to run: cpu, cuda, or auto (the GPU when one is usable)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
  cmd.add_option("--n-gpu-layers", o.n_gpu_layers,
                 "llama.cpp's -ngl, accepted for habit: lserve does not split a model between "
                 "devices, so any value above 0 runs all of it on the GPU (as --device cuda) and "
                 "0 on the CPU (as --device cpu)")
      ->check(CLI::Range(0, 1 << 20));
  cmd.add_option("-t,--threads", o.threads, "CPU threads (0 = all cores)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd.add_option("--max-model-len,-c,--ctx-size", o.max_model_len,
                 "Longest sequence (prompt + output) in tokens (0 = the model's context length; "
                 "longer than it runs, with a warning, as llama.cpp does; -c / --ctx-size as in "
                 "llama.cpp)")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  cmd.add_option("--kv-cache-mib", o.kv_cache_mib,
                 "Memory for the paged KV cache, in MiB (0 = 1 GiB on the CPU; on CUDA what "
                 "--gpu-memory-utilization leaves once the weights are loaded)")
      ->check(CLI::Range(0, 1 << 22))
      ->capture_default_str();
  cmd.add_option("--gpu-memory-utilization", o.gpu_memory_utilization,
                 "CUDA: the share of the GPU's whole memory lserve may fill with weights and KV "
                 "cache (as vLLM's flag); memory other processes use counts against it, and the "
                 "rest is left for activations and workspaces. Ignored with --kv-cache-mib and "
                 "on the CPU")
      ->check(CLI::Range(0.05, 1.0))
      ->capture_default_str();
  cmd.add_option("--kv-cache-dtype", o.kv_cache_dtype,
                 "How K/V are stored: auto (the compute type: f32 on the CPU, bf16 on CUDA), "
                 "bf16, or fp8 (E4M3 with a scale per token and KV head: about half the bytes of "
                 "bf16 on CUDA, which needs --logical-page-size above 1 with it; the CPU "
                 "emulates the rounding in f32 pools, so it changes the numbers but not the "
                 "memory there)")
      ->check(CLI::IsMember({"auto", "bf16", "fp8"}))
      ->capture_default_str();
  cmd.add_option("--max-num-seqs", o.max_num_seqs, "Most sequences in one batch")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd.add_option("--max-num-batched-tokens", o.max_num_batched_tokens,
                 "Most new tokens in one step; longer prompts are prefilled in chunks of this size")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd.add_flag("--enforce-eager", o.enforce_eager,
               "GPU: launch every decode step's kernels one by one instead of replaying CUDA "
               "graphs recorded per batch size (slower; for debugging and comparison)");
  cmd.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o.enable_prefix_caching,
               "Keep the KV pages of prompts after their requests finish, and let a later prompt "
               "that starts with the same tokens reuse them instead of recomputing (whole pages; "
               "with streaming heads only where the streaming pool still holds the sink and "
               "window pages the next token needs). Cached pages are evicted, least recently "
               "used first, when memory is needed. On by default in `serve`, off elsewhere");
  add_sparse_options(cmd, o);
}

void add_sparse_options(CLI::App& cmd, ModelOptions& o) {
  SparseAttentionConfig& s = o.sparse;
  const std::string g = "Sparse attention";
  cmd.add_flag("--dense", s.dense,
               "Dense attention everywhere (the baseline): no streaming heads, "
               "no page selection")
      ->group(g);
  cmd.add_option("--head-pattern", s.head_pattern,
                 "DuoAttention full_attention_heads.tsv ranking KV heads (one row per layer, one "
                 "gate per KV head); default: the model's own (patterns/ or the HF folder), else "
                 "all heads retrieval")
      ->check(CLI::ExistingFile)
      ->group(g);
  cmd.add_option("--static-sparsity", s.static_sparsity,
                 "Share of KV heads made streaming heads (lowest gates first)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--sink-tokens", s.sink_tokens, "Streaming heads: first tokens always attended")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--local-tokens", s.local_tokens,
                 "Streaming heads: trailing window while decoding")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--prefill-local-tokens", s.prefill_local_tokens,
                 "Streaming heads: trailing window while prefilling")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--page-size", s.page_size, "Tokens per physical KV page (P)")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--logical-page-size", s.logical_page_size,
                 "Tokens per logical page (L), the granularity of page scores; divides P")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--token-budget", s.token_budget,
                 "Retrieval heads read at most this many tokens per decode step (multiple of P)")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--selector-interval", s.selector_interval,
                 "Recompute the page selection every N decode steps, reusing it in between")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--selector-drift", s.selector_drift,
                 "Also recompute a head's page selection between --selector-interval steps when "
                 "the cosine of its current query with the query the selection was made for "
                 "falls below this (0 = off; CPU backend)")
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--prefill-sparsity", s.prefill_sparsity,
                 "Dynamic block-sparse prefill for retrieval heads: each block of 128 queries "
                 "attends only to the 128-key blocks holding this share of its estimated "
                 "attention mass (antidiagonal scoring), plus the first and its own block "
                 "(0 = off; 1 = every block; CUDA: bf16 KV, head_dim 64 or 128)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--prefill-dense-tail", s.prefill_dense_tail,
                 "With --prefill-sparsity: a query block whose last query in the chunk lies in the "
                 "prompt's last N positions (where a question usually is) attends to every key "
                 "block (0 = none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--prefill-estimate", o.prefill_estimate,
                 "How --prefill-sparsity estimates each block's share: antidiagonal (XAttention's "
                 "stride-8 antidiagonal sums) or sampled-rows (every 8th query scored exactly "
                 "against every key: more of the attention kept per block; "
                 "profile-heads: the estimate --prefill-recall measures)")
      ->check(CLI::IsMember({"antidiagonal", "sampled-rows"}))
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--selector-granularity", o.granularity,
                 "kv-head: one selection per KV head (max over its query heads); query-head: one "
                 "per query head")
      ->check(CLI::IsMember({"kv-head", "query-head"}))
      ->capture_default_str()
      ->group(g);
  cmd.add_option("--selector-skip-layers", s.selector_skip_layers,
                 "The first N layers always decode densely")
      ->capture_default_str()
      ->group(g);
}

void add_sampling_options(CLI::App& cmd, SamplingParams& p, std::string& seed_text) {
  cmd.add_option("--temperature,--temp", p.temperature, "Sampling temperature (0 = greedy)")
      ->capture_default_str();
  cmd.add_option("--top-k", p.top_k, "Keep the k most likely tokens (0 = off)")
      ->capture_default_str();
  cmd.add_option("--top-p", p.top_p, "Nucleus sampling: smallest set with this much probability")
      ->capture_default_str();
  cmd.add_option("--min-p", p.min_p, "Drop tokens below min-p times the best token's probability")
      ->capture_default_str();
  cmd.add_option("--repeat-penalty", p.repetition_penalty,
                 "Penalty for tokens among the last --repeat-last-n (1 = off)")
      ->capture_default_str();
  cmd.add_option("--repeat-last-n", p.repeat_last_n, "Window of the repeat penalty (-1 = all)")
      ->capture_default_str();
  cmd.add_option("--presence-penalty", p.presence_penalty,
                 "Subtract this from the logit of every token generated so far (-2..2, 0 = off)")
      ->capture_default_str();
  cmd.add_option("--frequency-penalty", p.frequency_penalty,
                 "Subtract this times its count so far from a generated token's logit (-2..2)")
      ->capture_default_str();
  cmd.add_option("-n,--max-tokens", p.max_tokens, "Most tokens to generate")->capture_default_str();
  cmd.add_option("--stop", p.stop, "Stop string (repeatable); it is not printed");
  cmd.add_option("--seed", seed_text, "Random seed (default: random, printed in the stats)");
  cmd.add_flag("--ignore-eos", p.ignore_eos, "Keep generating after end-of-text tokens");
}

void add_generation_config_option(CLI::App& cmd, std::string& mode) {
  cmd.add_option("--generation-config", mode,
                 "Default sampling parameters: auto takes temperature, top_p, top_k, min_p, "
                 "repetition_penalty and max_new_tokens from the model folder's "
                 "generation_config.json where it has one (GGUF files have none), below the "
                 "values a request or flag sets; vllm uses lserve's built-in defaults (as vLLM's "
                 "flag)")
      ->check(CLI::IsMember({"auto", "vllm"}))
      ->capture_default_str();
}

ExplicitSamplingFields explicit_sampling_fields(const CLI::App& cmd) {
  auto given = [&](const char* name) {
    const CLI::Option* opt = cmd.get_option_no_throw(name);
    return opt != nullptr && opt->count() > 0;
  };
  ExplicitSamplingFields f;
  f.temperature = given("--temperature");
  f.top_p = given("--top-p");
  f.top_k = given("--top-k");
  f.min_p = given("--min-p");
  f.repetition_penalty = given("--repeat-penalty");
  f.max_tokens = given("--max-tokens");
  return f;
}

std::optional<GenerationConfig> model_generation_config(const std::string& mode,
                                                        const ModelOptions& o) {
  if (parse_generation_config_mode(mode) == GenerationConfigMode::kVllm) return std::nullopt;
  const std::string path = parse_load_format(o.load_format) == LoadFormat::kDummy
                               ? o.model
                               : resolve_model_path(o.model);
  std::optional<GenerationConfig> g = find_generation_config(path);
  if (g && !g->empty()) {
    log::info("{}: default sampling parameters {} (--generation-config vllm ignores them)",
              g->source, g->summary());
  }
  return g;
}

void apply_seed(const std::string& seed_text, SamplingParams& p) {
  if (seed_text.empty()) {
    p.seed = std::random_device{}();
    return;
  }
  try {
    size_t used = 0;
    p.seed = std::stoull(seed_text, &used);
    LSERVE_CHECK(used == seed_text.size(), "--seed '{}' is not a number", seed_text);
  } catch (const std::logic_error&) {
    fail("--seed '{}' is not a non-negative integer", seed_text);
  }
}

std::unique_ptr<Backend> make_backend(const std::string& device, int threads) {
#ifdef LSERVE_WITH_CUDA
  if (device == "auto") return make_backend(cuda_device_available() ? "cuda" : "cpu", threads);
#else
  if (device == "auto") return make_backend("cpu", threads);
#endif
  if (device == "cpu") return std::make_unique<CpuBackend>(threads);
#ifdef LSERVE_WITH_CUDA
  std::string why;
  LSERVE_CHECK(cuda_device_available(&why), "--device cuda: no usable GPU ({})", why);
  return std::make_unique<CudaBackend>(0);
#else
  fail("--device {}: this build has no CUDA backend (nvcc was not found when it was built)",
       device);
#endif
}

std::unique_ptr<Engine> build_engine(const ModelOptions& o) {
  const int threads = o.threads > 0
                          ? o.threads
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  std::string device = o.device;
  if (o.n_gpu_layers >= 0) {
    const std::string wanted = o.n_gpu_layers > 0 ? "cuda" : "cpu";
    LSERVE_CHECK(device == "auto" || device == wanted,
                 "--n-gpu-layers {} asks for {}, --device for {}: give one of them", o.n_gpu_layers,
                 wanted, device);
    device = wanted;
  }
  auto backend = make_backend(device, threads);

  LoadOptions lo;
  lo.format = parse_load_format(o.load_format);
  lo.dummy_seed = o.dummy_seed;
  int last_pct = -1;
  lo.progress = [&](int done, int total) {
    const int pct = 100 * done / total;
    if (pct / 10 != last_pct / 10 || done == total) {
      log::info("loading weights: {:3d}% ({}/{} tensors)", pct, done, total);
      last_pct = pct;
    }
  };
  const std::string path = lo.format == LoadFormat::kDummy ? o.model : resolve_model_path(o.model);
  log::info("loading {} on {}", path, backend->name());
  const auto t0 = std::chrono::steady_clock::now();
  LoadedModel loaded = load_model(path, *backend, lo);
  log::info("model: {}", loaded.config.summary());
  log::info("loaded in {:.2f} s",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  EngineConfig ec;
  ec.scheduler.max_num_seqs = o.max_num_seqs;
  ec.scheduler.max_num_batched_tokens = o.max_num_batched_tokens;
  ec.max_model_len = o.max_model_len;
  ec.enforce_eager = o.enforce_eager;
  ec.scheduler.enable_prefix_caching = o.enable_prefix_caching;
  ec.kv_dtype = parse_kv_dtype(o.kv_cache_dtype);
  ec.sparse = o.sparse;
  ec.sparse.granularity = parse_granularity(o.granularity);
  ec.sparse.prefill_estimate = parse_prefill_estimate(o.prefill_estimate);
  ec.sparse.validate();
  ec.kv_cache_bytes = static_cast<int64_t>(o.kv_cache_mib) << 20;
  if (o.kv_cache_mib == 0) {
    // Auto: 1 GiB on the CPU; on a GPU, the share of its memory --gpu-memory-utilization gives,
    // less what is in use once the weights are loaded (theirs and other processes').
    const int64_t free_bytes = backend->free_memory_bytes();
    const int64_t total = backend->total_memory_bytes();
    if (free_bytes < 0 || total <= 0) {
      ec.kv_cache_bytes = int64_t{1} << 30;
    } else {
      const int64_t used = total - free_bytes;
      const auto allowed =
          static_cast<int64_t>(o.gpu_memory_utilization * static_cast<double>(total));
      LSERVE_CHECK(allowed - used >= (int64_t{64} << 20),
                   "--gpu-memory-utilization {} allows {:.1f} GiB of the GPU's {:.1f} GiB, but "
                   "{:.1f} GiB are in use once the weights are loaded: nothing is left for the "
                   "KV cache; raise it (at most 1.0) or free the GPU",
                   o.gpu_memory_utilization, allowed / 1073741824.0, total / 1073741824.0,
                   used / 1073741824.0);
      ec.kv_cache_bytes = allowed - used;
    }
  }
  return std::make_unique<Engine>(std::move(backend), std::move(loaded), ec);
}

int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

eval::Haystack haystack_for(const std::vector<std::string>& tasks, const std::string& dir) {
  const bool needs_essays = std::any_of(tasks.begin(), tasks.end(), [](const std::string& t) {
    return t == "needle" || t.rfind("niah_", 0) == 0;
  });
  if (!needs_essays) return eval::Haystack::filler();
  if (!dir.empty()) return eval::Haystack::essays(dir);
  if (const char* env = std::getenv("LSERVE_DATA_DIR")) {
    return eval::Haystack::essays((std::filesystem::path(env) / "PaulGrahamEssays").string());
  }
  return eval::Haystack::essays(
      (std::filesystem::path(LSERVE_SOURCE_DIR_FOR_DATA) / "data" / "PaulGrahamEssays").string());
}

}  // namespace lserve::app
