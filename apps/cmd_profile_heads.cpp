// `lserve profile-heads`: ranks KV heads by how much they need full attention and writes a
// DuoAttention-format pattern (full_attention_heads.tsv) for --head-pattern.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "engine/head_profiler.h"
#include "eval/runner.h"
#include "eval/tasks.h"
#include "model/model.h"
#include "model/model_loader.h"
#include "options.h"
#include "sparse/prefill_blocks.h"

namespace lserve::app {
namespace {

struct ProfileOptions {
  ModelOptions model;
  HeadProfileOptions profile;
  std::string calibration = "tasks";
  std::vector<std::string> tasks = {"needle", "niah_single", "niah_multikey", "passkey"};
  int cases = 3;
  std::string haystack_dir;
  std::string output = "full_attention_heads.tsv";
  std::vector<double> prefill_recall;  // thresholds: measure these instead of profiling
};

// The `lserve eval` tasks' prompts with their answers written after the answer prefix: the probed
// positions are the answer's tokens (and the one before, which predicts the first), exactly where
// retrieval matters.
std::vector<CalibrationPrompt> task_prompts(const ProfileOptions& o, const Tokenizer& tok) {
  const eval::Haystack essays = haystack_for(o.tasks, o.haystack_dir);
  auto prompt_tokens = [&](const std::string& user, const std::string& prefix) {
    return static_cast<int>(eval::encode_case(tok, user, prefix).size());
  };
  std::vector<CalibrationPrompt> prompts;
  for (int length : o.profile.lengths) {
    for (const std::string& task : o.tasks) {
      for (const eval::EvalCase& c :
           eval::make_cases(task, length, o.cases, o.profile.seed, tok, essays, prompt_tokens)) {
        CalibrationPrompt p;
        p.tokens = eval::encode_case(tok, c.user, c.answer_prefix);
        std::string answer;
        for (const auto& r : c.references) answer += (answer.empty() ? " " : ", ") + r;
        const auto ids = tok.encode(answer + ".", /*parse_special=*/false);
        p.tokens.insert(p.tokens.end(), ids.begin(), ids.end());
        p.probe_queries = static_cast<int>(ids.size()) + 1;
        prompts.push_back(std::move(p));
      }
    }
  }
  return prompts;
}

int run_profile(ProfileOptions& o) {
  LSERVE_CHECK(o.model.device != "cuda", "profile-heads runs on the CPU backend (--device cpu)");
  const int threads = o.model.threads > 0
                          ? o.model.threads
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
  LSERVE_CHECK(o.calibration == "tasks" || o.calibration == "passkey",
               "--calibration takes tasks or passkey, not '{}'", o.calibration);
  const auto t0 = std::chrono::steady_clock::now();
  auto progress = [&](int done, int total) {
    log::info("calibration prompt {}/{} done ({:.0f} s)", done, total,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  const PrefillEstimate estimate = parse_prefill_estimate(o.model.prefill_estimate);
  LSERVE_CHECK(!o.prefill_recall.empty() || estimate == PrefillEstimate::kAntidiagonal,
               "profile-heads uses --prefill-estimate only with --prefill-recall");
  if (!o.prefill_recall.empty()) {
    LSERVE_CHECK(o.calibration == "tasks", "--prefill-recall needs --calibration tasks");
    const auto prompts = task_prompts(o, tok);
    log::info("prefill-sparsity recall at the answers of {} prompts of the tasks {}",
              prompts.size(), fmt::join(o.tasks, ", "));
    log::info("prefill block shares estimated by {}", prefill_estimate_name(estimate));
    const auto recall =
        prefill_recall(*model, backend, prompts, o.prefill_recall, estimate, progress);
    std::printf(
        "| threshold | key blocks kept | answer rows' attention kept: mean | min | "
        "rows under the threshold | rows |\n|---|---|---|---|---|---|\n");
    for (const PrefillRecall& r : recall) {
      std::printf("| %.3f | %.1f%% | %.4f | %.4f | %.1f%% | %lld |\n", r.threshold, 100 * r.blocks,
                  r.mean, r.min, 100 * r.below, static_cast<long long>(r.rows));
    }
    return 0;
  }
  HeadProfile p;
  if (o.calibration == "passkey") {
    log::info("profiling {} KV heads on {} passkey prompts (sink {}, local {}, {} probe queries)",
              m.config.n_layers * m.config.n_kv_heads,
              o.profile.lengths.size() * o.profile.depths.size(), o.profile.sink_tokens,
              o.profile.local_tokens, o.profile.probe_queries);
    p = profile_heads(*model, backend, tok, o.profile, progress);
  } else {
    const auto prompts = task_prompts(o, tok);
    log::info("profiling {} KV heads on {} prompts of the tasks {} (sink {}, local {})",
              m.config.n_layers * m.config.n_kv_heads, prompts.size(), fmt::join(o.tasks, ", "),
              o.profile.sink_tokens, o.profile.local_tokens);
    p = profile_heads(*model, backend, prompts, o.profile, progress);
  }
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
      "Rank KV heads by how much they need full attention (on retrieval prompts) and write a "
      "DuoAttention-format head pattern for --head-pattern");
  add_model_options(*cmd, opts->model);
  cmd->add_option("-o,--output", opts->output, "Where to write the pattern (TSV)")
      ->capture_default_str();
  cmd->add_option("--calibration", opts->calibration,
                  "tasks: `lserve eval` task prompts with their answers, probed at the answer; "
                  "passkey: repeated-filler passkey prompts probed at their last positions")
      ->check(CLI::IsMember({"tasks", "passkey"}))
      ->capture_default_str();
  cmd->add_option("--lengths", opts->profile.lengths, "Calibration prompt lengths in tokens")
      ->capture_default_str();
  cmd->add_option("--tasks", opts->tasks, "--calibration tasks: the eval tasks to draw from")
      ->capture_default_str();
  cmd->add_option("--cases", opts->cases,
                  "--calibration tasks: prompts per task and length (needle depths spread evenly)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--haystack-dir", opts->haystack_dir,
                  "--calibration tasks: folder of the essays (default: data/PaulGrahamEssays)");
  cmd->add_option("--depths", opts->profile.depths,
                  "--calibration passkey: passkey positions in the prompt (0 = start, 1 = end)")
      ->capture_default_str();
  cmd->add_option("--probe-queries", opts->profile.probe_queries,
                  "--calibration passkey: last positions of each prompt whose attention outputs "
                  "are compared")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--calibration-seed", opts->profile.seed, "Seed of the calibration prompts")
      ->capture_default_str();
  cmd->add_option("--prefill-recall", opts->prefill_recall,
                  "Instead of profiling (and writing no pattern): for each threshold T, how much "
                  "of the answer rows' exact attention the key blocks that --prefill-sparsity T "
                  "keeps hold, over every layer and KV head (--calibration tasks)")
      ->check(CLI::Range(0.001, 1.0));
  return [opts] { return run_profile(*opts); };
}

}  // namespace lserve::app
