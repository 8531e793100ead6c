#include "test_util.h"

#include <cstdlib>

#include "engine/offline.h"

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
  OfflineRunOptions o;
  o.chunk = chunk;
  o.page_size = page_size;
  o.scramble_pages = true;
  return lserve::sequence_logits(model, backend, tokens, o);
}

}  // namespace lserve::test
