#include "sparse/sparse_config.h"

#include <fmt/format.h>

#include "core/error.h"

namespace lserve {

std::string_view granularity_name(SelectorGranularity g) {
  return g == SelectorGranularity::kKvHead ? "kv-head" : "query-head";
}

SelectorGranularity parse_granularity(const std::string& name) {
  if (name == "kv-head") return SelectorGranularity::kKvHead;
  if (name == "query-head") return SelectorGranularity::kQueryHead;
  fail("--selector-granularity '{}' is not one of kv-head, query-head", name);
}

void SparseAttentionConfig::validate() const {
  LSERVE_CHECK(page_size >= 1 && page_size <= 4096, "--page-size {} must be in [1, 4096]",
               page_size);
  LSERVE_CHECK(logical_page_size >= 1, "--logical-page-size {} must be positive",
               logical_page_size);
  LSERVE_CHECK(page_size % logical_page_size == 0,
               "--page-size {} must be a multiple of --logical-page-size {}", page_size,
               logical_page_size);
  LSERVE_CHECK(static_sparsity >= 0 && static_sparsity <= 1,
               "--static-sparsity {} must be in [0, 1]", static_sparsity);
  LSERVE_CHECK(sink_tokens >= 0, "--sink-tokens {} must not be negative", sink_tokens);
  LSERVE_CHECK(local_tokens >= 1, "--local-tokens {} must be at least 1 (a token sees itself)",
               local_tokens);
  LSERVE_CHECK(prefill_local_tokens >= local_tokens,
               "--prefill-local-tokens {} must be at least --local-tokens {}", prefill_local_tokens,
               local_tokens);
  LSERVE_CHECK(token_budget >= 2 * page_size && token_budget % page_size == 0,
               "--token-budget {} must be a multiple of --page-size {} and hold at least two pages",
               token_budget, page_size);
  LSERVE_CHECK(selector_interval >= 1, "--selector-interval {} must be at least 1",
               selector_interval);
  LSERVE_CHECK(selector_drift >= 0.0f && selector_drift <= 1.0f,
               "--selector-drift {} must be in [0, 1]", selector_drift);
  LSERVE_CHECK(prefill_sparsity >= 0 && prefill_sparsity <= 1,
               "--prefill-sparsity {} must be in [0, 1] (0: off)", prefill_sparsity);
  LSERVE_CHECK(!dense || prefill_sparsity == 0,
               "--prefill-sparsity is sparse attention: it cannot be combined with --dense");
  LSERVE_CHECK(prefill_estimate == PrefillEstimate::kAntidiagonal || prefill_sparsity > 0,
               "--prefill-estimate {} applies to --prefill-sparsity, which is off",
               prefill_estimate_name(prefill_estimate));
  LSERVE_CHECK(prefill_dense_tail >= 0, "--prefill-dense-tail {} must not be negative",
               prefill_dense_tail);
  LSERVE_CHECK(selector_skip_layers >= 0, "--selector-skip-layers {} must not be negative",
               selector_skip_layers);
}

std::string SparseAttentionConfig::summary() const {
  const std::string prefill =
      prefill_sparsity > 0
          ? fmt::format(", prefill blocks to mass {} ({}{})", prefill_sparsity,
                        prefill_estimate_name(prefill_estimate),
                        prefill_dense_tail > 0
                            ? fmt::format(", last {} positions dense", prefill_dense_tail)
                            : "")
          : "";
  if (dense) return fmt::format("dense (P {})", page_size);
  return fmt::format(
      "static sparsity {}, sink {}, local {} (prefill {}), P {}, L {}, budget {}, interval {}{}, "
      "{} granularity, first {} layers dense{}",
      static_sparsity, sink_tokens, local_tokens, prefill_local_tokens, page_size,
      logical_page_size, token_budget, selector_interval,
      selector_drift > 0 ? fmt::format(" (or query cosine < {})", selector_drift) : "",
      granularity_name(granularity), selector_skip_layers, prefill);
}

}  // namespace lserve
