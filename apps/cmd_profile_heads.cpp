// `lserve profile-heads`: ranks KV heads by how much they need full attention and writes a
// DuoAttention-format pattern (full_attention_heads.tsv) for --head-pattern.
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "engine/head_profiler.h"
#include "model/model.h"
#include "model/model_loader.h"
#include "options.h"

namespace lserve::app {
namespace {

struct ProfileOptions {
  ModelOptions model;
  HeadProfileOptions profile;
  std::string output = "full_attention_heads.tsv";
};

int run_profile(ProfileOptions& o) {
  LSERVE_CHECK(o.model.device != "cuda", "profile-heads runs on the CPU backend (--device cpu)");
  const int threads = o.model.threads > 0 ? o.model.threads
                                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  CpuBackend backend(threads);
  LoadOptions lo;
  lo.format = parse_load_format(o.model.load_format);
  const std::string path = resolve_model_path(o.model.model);
  log::info("loading {}", path);
  LoadedModel m = load_model(path, backend, lo);
  LSERVE_CHECK(m.tokenizer.has_value(), "{}: the model has no tokenizer", path);
  Tokenizer tok(std::move(*m.tokenizer));
  auto model = make_model(m.config, std::move(m.weights));
  o.profile.sink_tokens = o.model.sparse.sink_tokens;
  o.profile.local_tokens = o.model.sparse.local_tokens;
  log::info("profiling {} KV heads on {} passkey prompts (sink {}, local {}, {} probe queries)",
            m.config.n_layers * m.config.n_kv_heads, o.profile.lengths.size() * o.profile.depths.size(),
            o.profile.sink_tokens, o.profile.local_tokens, o.profile.probe_queries);
  const auto t0 = std::chrono::steady_clock::now();
  const HeadProfile p = profile_heads(*model, backend, tok, o.profile, [&](int done, int total) {
    log::info("calibration prompt {}/{} done ({:.0f} s)", done, total,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  });
  std::ofstream out(o.output);
  LSERVE_CHECK(out.good(), "cannot write {}", o.output);
  out << p.pattern.to_tsv();
  LSERVE_CHECK(out.good(), "error writing {}", o.output);
  std::ostringstream table;
  for (size_t l = 0; l < p.error.size(); ++l) {
    table << fmt::format("  layer {:2d}:", l);
    for (double e : p.error[l]) table << fmt::format(" {:.4f}", e);
    table << "\n";
  }
  log::info("relative output error of streaming-only attention per KV head:\n{}", table.str());
  log::info("wrote {} ({} layers x {} KV heads)", o.output, p.error.size(), p.error[0].size());
  return 0;
}

}  // namespace

Command add_profile_heads_command(CLI::App& app) {
  auto opts = std::make_shared<ProfileOptions>();
  CLI::App* cmd = app.add_subcommand(
      "profile-heads",
      "Rank KV heads by how much they need full attention (on passkey prompts) and write a "
      "DuoAttention-format head pattern for --head-pattern");
  add_model_options(*cmd, opts->model);
  cmd->add_option("-o,--output", opts->output, "Where to write the pattern (TSV)")
      ->capture_default_str();
  cmd->add_option("--lengths", opts->profile.lengths,
                  "Approximate calibration prompt lengths in tokens")
      ->capture_default_str();
  cmd->add_option("--depths", opts->profile.depths,
                  "Passkey positions in the prompt (0 = start, 1 = end)")
      ->capture_default_str();
  cmd->add_option("--probe-queries", opts->profile.probe_queries,
                  "Last positions of each prompt whose attention outputs are compared")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--calibration-seed", opts->profile.seed, "Seed of the calibration prompts")
      ->capture_default_str();
  return [opts] { return run_profile(*opts); };
}

}  // namespace lserve::app
