// `lserve eval`: long-context retrieval accuracy, dense and sparse attention in one run (needle in
// a haystack, passkey, RULER-style needle variants and variable tracking; src/eval/tasks.h). One
// engine per prompt length, with the sparse settings given by flags or scaled from the length;
// results as a table on stdout and as JSON (scripts/plot_eval.py draws the heatmaps).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/runner.h"
#include "options.h"

namespace lserve::app {
namespace {

struct EvalOptions {
  ModelOptions model;
  std::vector<std::string> tasks = {
      "needle",          "passkey",         "niah_single", "niah_multikey",
      "niah_multivalue", "niah_multiquery", "vt"};
  std::vector<int> lengths = {1024, 2048, 4096, 8192};
  std::vector<std::string> modes = {"dense", "sparse"};
  int num_cases = 10;
  double budget_ratio = 0;
  double prefill_window_ratio = 0;
  std::string haystack_dir;
  uint64_t seed = 0;
  std::string json = "eval.json";
};

// The engine options for prompts of `length` tokens: sparse budgets scaled from it when asked.
ModelOptions options_for(const EvalOptions& o, int length, int max_out) {
  ModelOptions m = o.model;
  const int P = m.sparse.page_size;
  if (o.budget_ratio > 0) {
    m.sparse.token_budget = std::max(2 * P, static_cast<int>(o.budget_ratio * length) / P * P);
  }
  if (o.prefill_window_ratio > 0) {
    m.sparse.prefill_local_tokens =
        std::max({P, m.sparse.local_tokens, static_cast<int>(o.prefill_window_ratio * length)});
  }
  m.max_model_len = length + max_out + 64;
  return m;
}

int run_eval(EvalOptions& o) {
  for (const auto& mode : o.modes) {
    LSERVE_CHECK(mode == "dense" || mode == "sparse", "--modes takes dense and sparse, not '{}'",
                 mode);
  }
  const eval::Haystack essays = haystack_for(o.tasks, o.haystack_dir);
  const auto t0 = std::chrono::steady_clock::now();
  nlohmann::json out;
  out["model"] = o.model.model;
  out["seed"] = o.seed;
  out["modes"] = o.modes;
  out["tasks"] = o.tasks;
  out["lengths"] = o.lengths;
  out["num_cases"] = o.num_cases;
  out["budget_ratio"] = o.budget_ratio;
  out["prefill_window_ratio"] = o.prefill_window_ratio;
  nlohmann::json& rows = out["results"] = nlohmann::json::array();
  // (task, length, mode) -> (sum of scores, count)
  std::map<std::tuple<std::string, int, std::string>, std::pair<double, int>> sums;
  for (int length : o.lengths) {
    auto engine = build_engine(options_for(o, length, 64));
    const std::string settings = engine->sparse().summary();
    log::info("eval at {} tokens: sparse attention {}", length, settings);
    out["settings"][std::to_string(length)] = settings;
    const Tokenizer& tok = engine->tokenizer();
    auto prompt_tokens = [&](const std::string& user, const std::string& prefix) {
      return static_cast<int>(eval::encode_case(tok, user, prefix).size());
    };
    std::vector<eval::EvalCase> cases;
    for (const std::string& task : o.tasks) {
      auto c = eval::make_cases(task, length, o.num_cases, o.seed, tok, essays, prompt_tokens);
      cases.insert(cases.end(), c.begin(), c.end());
    }
    const auto results = eval::run_cases(*engine, cases, o.modes, fmt::format("{} tokens", length));
    // Under --prefill-sparsity: the share of key blocks the retrieval heads read (sparse mode).
    const Backend::PrefillBlockStats pb = engine->backend().prefill_block_stats();
    if (pb.causal > 0) {
      out["prefill_blocks"][std::to_string(length)] = {{"kept", pb.kept}, {"causal", pb.causal}};
      log::info("prefill key blocks read by retrieval heads at {} tokens: {} of {} ({:.1f}%)",
                length, pb.kept, pb.causal,
                100.0 * static_cast<double>(pb.kept) / static_cast<double>(pb.causal));
    }
    for (const eval::EvalResult& r : results) {
      auto& [sum, n] = sums[{r.c->task, length, r.mode}];
      sum += r.score;
      ++n;
      rows.push_back({{"task", r.c->task},
                      {"length", length},
                      {"prompt_tokens", r.prompt_tokens},
                      {"depth", r.c->depth},
                      {"mode", r.mode},
                      {"score", r.score},
                      {"references", r.c->references},
                      {"output", r.output}});
    }
    // Each length's results are saved as soon as they exist: a long run stopped part way keeps
    // what it measured.
    if (!o.json.empty()) std::ofstream(o.json) << out.dump(1) << "\n";
  }
  // The table: one row per task and length, a column per mode, then each task's average.
  std::printf("| task | length |");
  for (const auto& m : o.modes) std::printf(" %s |", m.c_str());
  std::printf("\n|---|---|");
  for (size_t i = 0; i < o.modes.size(); ++i) std::printf("---|");
  std::printf("\n");
  for (const std::string& task : o.tasks) {
    std::map<std::string, std::pair<double, int>> total;
    for (int length : o.lengths) {
      std::printf("| %s | %d |", task.c_str(), length);
      for (const auto& m : o.modes) {
        const auto& [sum, n] = sums[{task, length, m}];
        std::printf(" %.1f |", n > 0 ? 100.0 * sum / n : 0.0);
        total[m].first += sum;
        total[m].second += n;
        out["summary"][task][m][std::to_string(length)] = n > 0 ? sum / n : 0.0;
      }
      std::printf("\n");
    }
    std::printf("| %s | average |", task.c_str());
    for (const auto& m : o.modes) {
      const auto& [sum, n] = total[m];
      std::printf(" %.1f |", n > 0 ? 100.0 * sum / n : 0.0);
      out["summary"][task][m]["average"] = n > 0 ? sum / n : 0.0;
    }
    std::printf("\n");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  out["seconds"] = seconds;
  if (!o.json.empty()) {
    std::ofstream(o.json) << out.dump(1) << "\n";
    log::info("results in {} ({:.0f} s)", o.json, seconds);
  }
  return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
  auto opts = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Long-context retrieval accuracy, dense vs sparse attention: needle in a haystack, passkey, "
      "RULER-style needle variants and variable tracking");
  add_model_options(*cmd, opts->model);
  cmd->add_option("--tasks", opts->tasks,
                  "Tasks: needle, passkey, niah_single, niah_multikey, niah_multivalue, "
                  "niah_multiquery, vt")
      ->capture_default_str();
  cmd->add_option("--lengths", opts->lengths, "Prompt lengths in tokens")->capture_default_str();
  cmd->add_option("--num-cases", opts->num_cases,
                  "Cases per task and length (the needle's depths 0..100% for needle and passkey)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--modes", opts->modes,
                  "dense and/or sparse (dense: the per-request dense override of the same engine)")
      ->capture_default_str();
  cmd->add_option("--budget-ratio", opts->budget_ratio,
                  "Scale --token-budget to this share of each length (rounded down to pages; 0: "
                  "use --token-budget as given)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--prefill-window-ratio", opts->prefill_window_ratio,
                  "Scale --prefill-local-tokens to this share of each length, at least "
                  "--local-tokens (0: as given)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd->add_option("--haystack-dir", opts->haystack_dir,
                  "Folder of .txt essays (default: data/PaulGrahamEssays, fetched by "
                  "scripts/fetch-haystack.sh, or $LSERVE_DATA_DIR/PaulGrahamEssays)");
  cmd->add_option("--seed", opts->seed, "Seed of the needles, keys and depths")
      ->capture_default_str();
  cmd->add_option("--output-json", opts->json, "Write every case's result here ('' : nowhere)")
      ->capture_default_str();
  return [opts] { return run_eval(*opts); };
}

}  // namespace lserve::app
