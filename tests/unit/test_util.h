// Shared helpers of the unit tests: paths, the default model, a one-sequence forward pass.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/sampling.h"
#include "kv/kv_cache.h"
#include "model/model.h"
#include "model/model_loader.h"

namespace lserve::test {

std::string source_dir();
std::string fixture_path(const std::string& name);
// A fresh seed per run, printed so a failure can be replayed with LSERVE_TEST_SEED.
uint64_t test_seed();

// A real model loaded once per test binary on a shared CPU backend.
struct TestModel {
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  ModelConfig config;
};

// The default model; fails the test (does not skip) when the file is missing, since `make test`
// fetches it first.
TestModel& default_model();

// Gemma 3 270M (`scripts/fetch-model.sh gemma3`, `make gemma`), which tests skip without:
// LSERVE_SKIP_WITHOUT_GEMMA3() first.
std::string gemma3_path();
bool have_gemma3();
TestModel& gemma3_model();

#define LSERVE_SKIP_WITHOUT_GEMMA3()            \
  if (!::lserve::test::have_gemma3())           \
  GTEST_SKIP() << ::lserve::test::gemma3_path() \
               << " is absent (`scripts/fetch-model.sh gemma3` or `make gemma` fetches it)"

// Runs `tokens` through the model as one sequence in chunks of `chunk` tokens and returns the
// logits of every position, [tokens.size() * vocab].
std::vector<float> sequence_logits(Model& model, Backend& backend,
                                   const std::vector<int32_t>& tokens, int chunk,
                                   int page_size = 16);

// Normal(0, scale) values rounded to bf16, so every backend starts from the same numbers.
std::vector<float> bf16_random(size_t n, std::mt19937_64& rng, float scale = 1.0f);

// Normal(0, scale) logits (f32) for the sampling tests.
std::vector<float> random_logits(int64_t n, std::mt19937_64& rng, float scale = 3.0f);

// A sampling row with these parameters (logprobs -1: none asked for), as the engine fills one.
SampleRow make_row(int vocab, float temperature, int top_k = 0, float top_p = 1.0f,
                   float min_p = 0.0f, uint64_t seed = 1, uint32_t counter = 0, int logprobs = -1);

// A valid small Llama config: d_model 256, 8 query / 2 KV heads, d_ff 512, vocab 1000, tied
// embeddings.
ModelConfig small_llama_config(int n_layers, int head_dim);

// A small Llama with random weights (bf16-representable, the same for the same seed on every
// backend), unit norms and tied embeddings; `c` must be valid.
std::unique_ptr<Model> random_llama(Backend& b, const ModelConfig& c, uint64_t seed);

// A valid small Gemma 3 config: d_model 256, 4 query heads and 1 KV head of `head_dim` (the
// 270M model's grouping), d_ff 512, vocab 1000, tied embeddings, layer l sliding over `window`
// tokens except every third (global), local RoPE base 1e4 and global 1e6.
ModelConfig small_gemma3_config(int n_layers, int head_dim, int window);

// A small Gemma 3 with random weights (bf16-representable, the same for the same seed on every
// backend): norms near 1 (they hold 1 + w, as GGUF stores them), tied embeddings.
std::unique_ptr<Model> random_gemma3(Backend& b, const ModelConfig& c, uint64_t seed);

}  // namespace lserve::test
