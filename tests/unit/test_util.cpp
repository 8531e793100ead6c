#include "test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/dtype.h"
#include "engine/offline.h"

namespace lserve::test {

std::string source_dir() {
  if (const char* e = std::getenv("LSERVE_SOURCE_DIR")) return e;
  return LSERVE_SOURCE_DIR;
}

std::string fixture_path(const std::string& name) {
  return source_dir() + "/tests/fixtures/" + name;
}

uint64_t test_seed() {
  if (const char* e = std::getenv("LSERVE_TEST_SEED")) return std::strtoull(e, nullptr, 10);
  const uint64_t s = std::random_device{}();
  std::printf("[ seed     ] LSERVE_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
  return s;
}

namespace {

TestModel* load_test_model(const std::string& path) {
  auto* m = new TestModel;
  m->backend = std::make_unique<CpuBackend>(2);
  LoadedModel lm = load_model(path, *m->backend, {});
  m->config = lm.config;
  m->tokenizer = std::make_unique<Tokenizer>(std::move(*lm.tokenizer));
  m->model = make_model(lm.config, std::move(lm.weights));
  return m;
}

}  // namespace

TestModel& default_model() {
  static TestModel* m = load_test_model(source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
  return *m;
}

std::string gemma3_path() { return source_dir() + "/models/gemma-3-270m-q4_k_m.gguf"; }

bool have_gemma3() { return std::filesystem::exists(gemma3_path()); }

TestModel& gemma3_model() {
  static TestModel* m = load_test_model(gemma3_path());
  return *m;
}

std::vector<float> sequence_logits(Model& model, Backend& backend,
                                   const std::vector<int32_t>& tokens, int chunk, int page_size) {
  OfflineRunOptions o;
  o.chunk = chunk;
  o.page_size = page_size;
  o.scramble_pages = true;
  return lserve::sequence_logits(model, backend, tokens, o);
}

std::vector<float> bf16_random(size_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  return v;
}

std::vector<float> random_logits(int64_t n, std::mt19937_64& rng, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

SampleRow make_row(int vocab, float temperature, int top_k, float top_p, float min_p, uint64_t seed,
                   uint32_t counter, int logprobs) {
  SampleRow r{};
  r.temperature = temperature;
  r.top_k = top_k;
  r.top_p = top_p;
  r.min_p = min_p;
  r.seed_lo = static_cast<uint32_t>(seed);
  r.seed_hi = static_cast<uint32_t>(seed >> 32);
  r.counter = counter;
  r.vocab = vocab;
  r.logprobs = logprobs;
  return r;
}

ModelConfig small_llama_config(int n_layers, int head_dim) {
  ModelConfig c;
  c.arch = "llama";
  c.n_layers = n_layers;
  c.d_model = 256;
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = head_dim;
  c.d_ff = 512;
  c.vocab_size = 1000;
  c.max_context = 4096;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.tied_embeddings = true;
  c.validate("test");
  return c;
}

std::unique_ptr<Model> random_llama(Backend& b, const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 r(seed);
  ModelWeights w;
  auto mat = [&](int64_t rows, int64_t cols, float scale) {
    const auto v = bf16_random(static_cast<size_t>(rows * cols), r, scale);
    return b.upload(v.data(), rows, cols);
  };
  auto ones = [&](int64_t cols) {
    std::vector<float> v(cols, 1.0f);
    return b.upload(v.data(), 1, cols);
  };
  w.tok_embd = mat(c.vocab_size, c.d_model, 1.0f);
  w.output = w.tok_embd;
  w.output_norm = ones(c.d_model);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    const float s = 1.0f / std::sqrt(static_cast<float>(c.d_model));
    L.attn_norm = ones(c.d_model);
    L.ffn_norm = ones(c.d_model);
    L.wq = mat(c.q_dim(), c.d_model, s);
    L.wk = mat(c.kv_dim(), c.d_model, s);
    L.wv = mat(c.kv_dim(), c.d_model, s);
    L.wo = mat(c.d_model, c.q_dim(), s);
    L.w_gate = mat(c.d_ff, c.d_model, s);
    L.w_up = mat(c.d_ff, c.d_model, s);
    L.w_down = mat(c.d_model, c.d_ff, 1.0f / std::sqrt(static_cast<float>(c.d_ff)));
    w.layers.push_back(L);
  }
  return make_model(c, std::move(w));
}

ModelConfig small_gemma3_config(int n_layers, int head_dim, int window) {
  ModelConfig c;
  c.arch = "gemma3";
  c.n_layers = n_layers;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = 1;
  c.head_dim = head_dim;
  c.d_ff = 512;
  c.vocab_size = 1000;
  c.max_context = 4096;
  c.rms_eps = 1e-6f;
  c.rope_theta = 1e6f;
  c.rope_theta_local = 1e4f;
  c.rope_style = RopeStyle::kHalfSplit;
  c.tied_embeddings = true;
  for (int l = 0; l < n_layers; ++l) c.layer_windows.push_back(l % 3 == 2 ? 0 : window);
  c.validate("test");
  return c;
}

std::unique_ptr<Model> random_gemma3(Backend& b, const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 r(seed);
  ModelWeights w;
  auto mat = [&](int64_t rows, int64_t cols, float scale) {
    const auto v = bf16_random(static_cast<size_t>(rows * cols), r, scale);
    return b.upload(v.data(), rows, cols);
  };
  auto norm = [&](int64_t cols) {
    auto v = bf16_random(static_cast<size_t>(cols), r, 0.1f);
    for (auto& x : v) x = bf16_to_f32(f32_to_bf16(1.0f + x));
    return b.upload(v.data(), 1, cols);
  };
  w.tok_embd = mat(c.vocab_size, c.d_model, 1.0f);
  w.output = w.tok_embd;
  w.output_norm = norm(c.d_model);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    const float s = 1.0f / std::sqrt(static_cast<float>(c.d_model));
    L.attn_norm = norm(c.d_model);
    L.ffn_norm = norm(c.d_model);
    L.post_attn_norm = norm(c.d_model);
    L.post_ffn_norm = norm(c.d_model);
    L.q_norm = norm(c.head_dim);
    L.k_norm = norm(c.head_dim);
    L.wq = mat(c.q_dim(), c.d_model, s);
    L.wk = mat(c.kv_dim(), c.d_model, s);
    L.wv = mat(c.kv_dim(), c.d_model, s);
    L.wo = mat(c.d_model, c.q_dim(), 1.0f / std::sqrt(static_cast<float>(c.q_dim())));
    L.w_gate = mat(c.d_ff, c.d_model, s);
    L.w_up = mat(c.d_ff, c.d_model, s);
    L.w_down = mat(c.d_model, c.d_ff, 1.0f / std::sqrt(static_cast<float>(c.d_ff)));
    w.layers.push_back(L);
  }
  return make_model(c, std::move(w));
}

}  // namespace lserve::test
