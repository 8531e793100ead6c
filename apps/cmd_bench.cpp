// `lserve bench`: offline latency of a batch, in the conventions of `vllm bench latency` and
// llama-bench: a batch of prompts of --input-len random tokens, each generating --output-len
// tokens (greedy, end-of-text ignored), repeated --num-iters times after warm-up; time to first
// token (the batch's prefill), time per output token, and tokens/s, with their spread.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "options.h"

namespace lserve::app {
namespace {

struct BenchOptions {
  ModelOptions model;
  std::vector<int> input_lens = {1024};
  int output_len = 128;
  std::vector<int> batch_sizes = {1};
  std::vector<std::string> modes;  // empty: the engine's own (sparse, or dense with --dense)
  int num_iters = 3;
  int num_iters_warmup = 1;
  bool synthetic_prefill = false;
  uint64_t seed = 0;
  std::string json;
};

struct IterResult {
  double ttft = 0;     // seconds from submission to the batch's last first token
  double decode = 0;   // seconds from then to the last token
  double latency = 0;  // seconds in all
  int64_t output_tokens = 0;
  // Device time per decode step (from the first step after the batch's last first token to
  // the end), where the backend measures it; else < 0.
  double device_step_ms = -1;
};

using Clock = std::chrono::steady_clock;

// One configuration of a bench run: every timed iteration submits `batch` prompts of `input_len`.
struct Shape {
  int input_len;
  int batch;
  bool dense;
};

IterResult run_once(Engine& engine, const BenchOptions& o, const Shape& sh, std::mt19937_64& rng) {
  const auto vocab = static_cast<int32_t>(
      std::min<size_t>(engine.tokenizer().vocab_size(), engine.model_config().vocab_size));
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  const auto t0 = Clock::now();
  for (int b = 0; b < sh.batch; ++b) {
    Request r;
    r.prompt.resize(static_cast<size_t>(sh.input_len));
    for (auto& t : r.prompt) t = token(rng);
    r.params.temperature = 0;
    r.params.max_tokens = o.output_len;
    r.params.ignore_eos = true;
    r.params.seed = rng();
    r.synthetic_prefill = o.synthetic_prefill;
    if (sh.dense) r.sparse.dense = true;
    engine.submit(std::move(r));
  }
  IterResult res;
  std::set<int64_t> started;  // requests that have their first token
  Clock::time_point first_done = t0;
  Backend::DeviceTime device_at_first{};
  while (engine.has_work()) {
    for (const SeqOutput& out : engine.step()) {
      LSERVE_CHECK(out.finish_reason != FinishReason::kError, "request failed: {}", out.error);
      res.output_tokens += static_cast<int64_t>(out.new_tokens.size());
      if (!out.new_tokens.empty()) started.insert(out.id);
    }
    if (started.size() == static_cast<size_t>(sh.batch) && first_done == t0) {
      first_done = Clock::now();
      device_at_first = engine.backend().device_time();
    }
  }
  const auto t1 = Clock::now();
  const Backend::DeviceTime device_at_end = engine.backend().device_time();
  if (device_at_first.steps >= 0 && device_at_end.steps > device_at_first.steps) {
    res.device_step_ms = 1e3 * (device_at_end.seconds - device_at_first.seconds) /
                         static_cast<double>(device_at_end.steps - device_at_first.steps);
  }
  res.ttft = std::chrono::duration<double>(first_done - t0).count();
  res.latency = std::chrono::duration<double>(t1 - t0).count();
  res.decode = res.latency - res.ttft;
  return res;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<size_t>(idx);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

int run_bench(BenchOptions& o) {
  LSERVE_CHECK(!o.input_lens.empty() && !o.batch_sizes.empty(),
               "--input-len and --batch-size need at least one value");
  const int max_input = *std::max_element(o.input_lens.begin(), o.input_lens.end());
  const int max_batch = *std::max_element(o.batch_sizes.begin(), o.batch_sizes.end());
  LSERVE_CHECK(
      *std::min_element(o.input_lens.begin(), o.input_lens.end()) >= 1 && o.output_len >= 2 &&
          *std::min_element(o.batch_sizes.begin(), o.batch_sizes.end()) >= 1 && o.num_iters >= 1,
      "--input-len >= 1, --output-len >= 2, --batch-size >= 1 and --num-iters >= 1");
  if (o.modes.empty()) o.modes = {o.model.sparse.dense ? "dense" : "sparse"};
  for (const auto& m : o.modes) {
    LSERVE_CHECK(m == "dense" || m == "sparse", "--modes takes dense and sparse, not '{}'", m);
    LSERVE_CHECK(m == "dense" || !o.model.sparse.dense,
                 "--modes sparse cannot run with --dense (the engine has no sparse attention)");
  }
  if (o.model.max_num_seqs < max_batch) o.model.max_num_seqs = max_batch;
  // One engine for every run: dense runs switch sparse attention off per request.
  auto engine = build_engine(o.model);
  LSERVE_CHECK(max_input + o.output_len <= engine->max_model_len(),
               "--input-len + --output-len = {} is more than the maximum context length {}",
               max_input + o.output_len, engine->max_model_len());
  if (o.synthetic_prefill) {
    log::info("synthetic prefill: the context's KV is random values, not computed");
    engine->fill_kv_random(o.seed + 12345);
  }
  std::mt19937_64 rng(o.seed);
  nlohmann::json runs = nlohmann::json::array();
  std::string table =
      "| batch | input | output | mode | TTFT s (median) | TPOT ms (median, min-max) | device "
      "ms/step | decode tok/s | output tok/s (end to end) | latency s |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n";
  for (int input_len : o.input_lens) {
    for (int batch : o.batch_sizes) {
      for (const std::string& mode : o.modes) {
        const Shape sh{input_len, batch, mode == "dense"};
        const std::string label =
            fmt::format("batch {}, {} input tokens, {}", batch, input_len, mode);
        for (int i = 0; i < o.num_iters_warmup; ++i) {
          log::info("{}: warm-up {}/{}", label, i + 1, o.num_iters_warmup);
          run_once(*engine, o, sh, rng);
        }
        std::vector<double> ttft, tpot, latency, tps, decode_tps, device_ms;
        for (int i = 0; i < o.num_iters; ++i) {
          const IterResult r = run_once(*engine, o, sh, rng);
          ttft.push_back(r.ttft);
          tpot.push_back(1e3 * r.decode / (o.output_len - 1));
          latency.push_back(r.latency);
          tps.push_back(static_cast<double>(r.output_tokens) / r.latency);
          decode_tps.push_back(static_cast<double>(batch) * (o.output_len - 1) / r.decode);
          if (r.device_step_ms >= 0) device_ms.push_back(r.device_step_ms);
          log::info("{}: iteration {}/{}: TTFT {:.3f} s, TPOT {:.3f} ms, {:.1f} output tokens/s",
                    label, i + 1, o.num_iters, r.ttft, tpot.back(), tps.back());
        }
        table += fmt::format(
            "| {} | {} | {} | {}{} | {:.3f} | {:.3f} ({:.3f}-{:.3f}) | {} | {:.1f} | {:.1f} | "
            "{:.3f} |\n",
            batch, input_len, o.output_len, mode, o.model.enforce_eager ? ", eager" : "",
            percentile(ttft, 50), percentile(tpot, 50), *std::min_element(tpot.begin(), tpot.end()),
            *std::max_element(tpot.begin(), tpot.end()),
            device_ms.empty() ? std::string("-") : fmt::format("{:.3f}", percentile(device_ms, 50)),
            percentile(decode_tps, 50), percentile(tps, 50), percentile(latency, 50));
        nlohmann::json j;
        j["batch_size"] = batch;
        j["input_len"] = input_len;
        j["output_len"] = o.output_len;
        j["mode"] = mode;
        j["sparse"] = mode == "dense" ? "dense" : engine->sparse().summary();
        j["enforce_eager"] = o.model.enforce_eager;
        j["synthetic_prefill"] = o.synthetic_prefill;
        j["ttft_s"] = ttft;
        j["tpot_ms"] = tpot;
        if (!device_ms.empty()) j["device_ms_per_step"] = device_ms;
        j["latency_s"] = latency;
        j["output_tokens_per_s"] = tps;
        j["decode_tokens_per_s"] = decode_tps;
        runs.push_back(std::move(j));
        // Written after every configuration, so a long run stopped part way keeps its results.
        if (!o.json.empty()) std::ofstream(o.json) << runs.dump(2) << "\n";
      }
    }
  }
  std::fputs(table.c_str(), stdout);
  const RunnerStats& rs = engine->runner_stats();
  std::fprintf(stderr, "decode steps: %lld replayed from CUDA graphs, %lld launched directly\n",
               static_cast<long long>(rs.replayed_steps), static_cast<long long>(rs.eager_steps));
  const Backend::PrefillBlockStats pb = engine->backend().prefill_block_stats();
  if (pb.causal > 0) {
    std::fprintf(stderr,
                 "prefill key blocks read by retrieval heads: %lld of %lld causal (%.1f%%, all "
                 "runs)\n",
                 static_cast<long long>(pb.kept), static_cast<long long>(pb.causal),
                 100.0 * static_cast<double>(pb.kept) / static_cast<double>(pb.causal));
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
  auto opts = std::make_shared<BenchOptions>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Latency of one batch (as `vllm bench latency`): TTFT, time per output token, tokens/s");
  add_model_options(*cmd, opts->model);
  cmd->add_option("--input-len", opts->input_lens,
                  "Prompt tokens per request (random token ids); several values: one run each")
      ->capture_default_str();
  cmd->add_option("--output-len", opts->output_len, "Tokens generated per request (>= 2)")
      ->capture_default_str();
  cmd->add_option("--batch-size", opts->batch_sizes,
                  "Requests submitted together; several values: one run each")
      ->capture_default_str();
  cmd->add_option("--modes", opts->modes,
                  "Attention of the runs: dense and/or sparse, each timed on the same engine "
                  "(default: sparse, or dense with --dense)");
  cmd->add_option("--num-iters", opts->num_iters, "Timed iterations")->capture_default_str();
  cmd->add_option("--num-iters-warmup", opts->num_iters_warmup,
                  "Untimed iterations first (CUDA graphs are recorded and kernels tuned here)")
      ->capture_default_str();
  cmd->add_flag("--synthetic-prefill", opts->synthetic_prefill,
                "Skip computing the prompt: its KV (all but the last token) is random values, so "
                "decoding at long contexts can be timed quickly; TTFT then means nothing");
  cmd->add_option("--seed", opts->seed, "Seed of the random prompts")->capture_default_str();
  cmd->add_option("--output-json", opts->json,
                  "Also write every run's per-iteration numbers here (a JSON array, one object "
                  "per batch size, input length and mode)");
  return [opts] { return run_bench(*opts); };
}

}  // namespace lserve::app
