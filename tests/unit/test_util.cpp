#include "test_util.h"

#include <cstdlib>

namespace lserve::test {

std::string source_dir() {
  if (const char* e = std::getenv("LSERVE_SOURCE_DIR")) return e;
  return LSERVE_SOURCE_DIR;
}

std::string fixture_path(const std::string& name) { return source_dir() + "/tests/fixtures/" + name; }

uint64_t test_seed() {
  if (const char* e = std::getenv("LSERVE_TEST_SEED")) return std::strtoull(e, nullptr, 10);
  const uint64_t s = std::random_device{}();
  std::printf("[ seed     ] LSERVE_TEST_SEED=%llu\n", static_cast<unsigned long long>(s));
  return s;
}

DefaultModel& default_model() {
  static DefaultModel* m = [] {
    auto* d = new DefaultModel;
    d->backend = std::make_unique<CpuBackend>(2);
    const std::string path = source_dir() + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    LoadedModel lm = load_model(path, *d->backend, {});
    d->config = lm.config;
    d->tokenizer = std::make_unique<Tokenizer>(std::move(*lm.tokenizer));
    d->model = make_model(lm.config, std::move(lm.weights));
    return d;
  }();
  return *m;
}

std::vector<float> sequence_logits(Model& model, Backend& backend, const std::vector<int32_t>& tokens,
                                   int chunk, int page_size) {
  const ModelConfig& c = model.config();
  KvCacheConfig kc;
  kc.n_layers = c.n_layers;
  kc.n_heads = c.n_heads;
  kc.n_kv_heads = c.n_kv_heads;
  kc.head_dim = c.head_dim;
  kc.sparse.dense = true;
  kc.sparse.page_size = page_size;
  kc.sparse.logical_page_size = page_size;
  kc.sparse.token_budget = 2 * page_size;
  const int n = static_cast<int>(tokens.size());
  kc.num_pages = (n + page_size - 1) / page_size + 1;
  KvCache cache(backend, kc, HeadMap::all_retrieval(c.n_layers, c.n_kv_heads));
  // Pages in scrambled order so the test exercises the page table, not contiguous memory.
  std::vector<int32_t> pages(kc.num_pages);
  for (int i = 0; i < kc.num_pages; ++i) pages[i] = (i * 7 + 3) % kc.num_pages;
  if (std::gcd(7, kc.num_pages) != 1) std::iota(pages.begin(), pages.end(), 0);

  std::vector<float> all(static_cast<size_t>(n) * c.vocab_size);
  for (int start = 0; start < n; start += chunk) {
    const int len = std::min(chunk, n - start);
    StepPlan p;
    SeqStep s;
    s.q_len = len;
    s.start_pos = start;
    s.want_logits = true;
    p.seqs.push_back(s);
    for (int i = 0; i < len; ++i) {
      p.token_ids.push_back(tokens[start + i]);
      p.positions.push_back(start + i);
      p.logits_rows.push_back(i);
    }
    const int np = (start + len + page_size - 1) / page_size;
    p.page_indptr = {0, np};
    p.page_indices.assign(pages.begin(), pages.begin() + np);
    p.stream_indptr = {0, 0};
    Tensor logits = model.forward(p, backend, cache);
    backend.to_host(logits, all.data() + static_cast<size_t>(start) * c.vocab_size);
  }
  return all;
}

}  // namespace lserve::test
