// `lserve generate`: one prompt in, streamed text out on stdout, timing on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/mapped_file.h"
#include "options.h"
#include "tokenizer/chat_template.h"

namespace lserve::app {
namespace {

struct GenerateOptions {
  ModelOptions model;
  SamplingParams sampling;
  std::string generation_config = "auto";
  ExplicitSamplingFields explicit_fields;  // flags given: the model's defaults keep off them
  std::string seed_text;
  std::string prompt;
  std::string prompt_file;
  bool chat = false;
  std::string system;
  std::string assistant_prefix;
  std::string chat_template;
  bool show_prompt = false;
  bool stats = false;
};

std::string read_prompt(const GenerateOptions& o) {
  if (!o.prompt.empty()) return o.prompt;
  if (!o.prompt_file.empty()) return read_text_file(o.prompt_file);
  log::info("reading the prompt from stdin (end with Ctrl-D)");
  return std::string(std::istreambuf_iterator<char>(std::cin), {});
}

void print_sparse_stats(const Engine& e) {
  const EngineStats& s = e.stats();
  const double steps = std::max<double>(1, s.decode_tokens);
  const KvTraffic& t = s.decode_kv;
  const auto mib = [](double b) { return b / 1048576.0; };
  const KvCache& kv = e.kv_cache();
  const double page_r = kv.blocks_pool_page_bytes(HeadClass::kRetrieval);
  const double page_s = kv.blocks_pool_page_bytes(HeadClass::kStreaming);
  std::fprintf(stderr,
               "--- sparse attention (%s) ---\n"
               "KV read per decode step: %.3f MiB vs %.3f MiB dense (%.1f%%, %.1fx less); "
               "selector share %.1f%%\n"
               "KV pool in use (peak): retrieval %d pages = %.2f MiB, streaming %d pages = %.2f "
               "MiB\n",
               e.sparse().summary().c_str(), mib(t.sparse_bytes / steps),
               mib(t.dense_bytes / steps),
               t.dense_bytes > 0 ? 100.0 * t.sparse_bytes / t.dense_bytes : 0.0,
               t.sparse_bytes > 0 ? t.dense_bytes / t.sparse_bytes : 0.0,
               t.sparse_bytes > 0 ? 100.0 * t.selector_bytes / t.sparse_bytes : 0.0, s.peak_pages,
               mib(s.peak_pages * page_r), s.peak_stream_pages, mib(s.peak_stream_pages * page_s));
  const Backend::PrefillBlockStats pb = e.backend().prefill_block_stats();
  if (pb.causal > 0) {
    std::fprintf(stderr,
                 "Prefill key blocks read by retrieval heads: %lld of %lld causal (%.1f%%)\n",
                 static_cast<long long>(pb.kept), static_cast<long long>(pb.causal),
                 100.0 * static_cast<double>(pb.kept) / static_cast<double>(pb.causal));
  }
}

int run_generate(GenerateOptions& o) {
  if (auto g = model_generation_config(o.generation_config, o.model)) {
    g->apply(o.sampling, o.explicit_fields);
  }
  apply_seed(o.seed_text, o.sampling);
  o.sampling.validate();
  std::string text = read_prompt(o);
  LSERVE_CHECK(!text.empty(), "the prompt is empty");

  auto engine = build_engine(o.model);
  const Tokenizer& tok = engine->tokenizer();
  Request req;
  if (o.chat) {
    const ChatTemplate tmpl = ChatTemplate::resolve(o.chat_template, tok);
    std::vector<ChatMessage> msgs;
    if (!o.system.empty()) msgs.push_back({"system", o.system});
    msgs.push_back({"user", text});
    // --assistant-prefix: the reply is that assistant message, continued (the server's
    // continue_final_message).
    ChatOptions copts;
    copts.continue_final_message = !o.assistant_prefix.empty();
    if (copts.continue_final_message) msgs.push_back({"assistant", o.assistant_prefix});
    const bool gen_prompt = !copts.continue_final_message;
    req.prompt = encode_chat(tok, tmpl, msgs, gen_prompt, {}, copts);
    text = tmpl.apply(msgs, gen_prompt, copts);  // for --show-prompt
  } else {
    req.prompt = tok.encode(text, /*parse_special=*/false, /*add_bos=*/tok.add_bos());
  }
  req.params = o.sampling;
  if (o.show_prompt) std::cerr << text << "\n";
  log::info("prompt: {} tokens", req.prompt.size());

  const auto prompt_tokens = static_cast<int64_t>(req.prompt.size());
  const int64_t id = engine->submit(std::move(req));
  int64_t completion = 0;
  FinishReason reason = FinishReason::kNone;
  // A long prompt is prefilled in chunks over many steps (minutes on a CPU): say how far it is,
  // every few seconds, until its first token.
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_report = start;
  while (engine->has_work()) {
    const std::vector<SeqOutput> outs = engine->step();
    const int64_t prefilled = engine->stats().prompt_tokens;
    if (prefilled < prompt_tokens && Clock::now() - last_report >= std::chrono::seconds(3)) {
      last_report = Clock::now();
      const double seconds = std::chrono::duration<double>(last_report - start).count();
      log::info("prefill: {} of {} prompt tokens ({:.0f}%, {:.0f} tokens/s)", prefilled,
                prompt_tokens, 100.0 * prefilled / prompt_tokens, prefilled / seconds);
    }
    for (const SeqOutput& out : outs) {
      if (out.id != id) continue;
      std::fwrite(out.new_text.data(), 1, out.new_text.size(), stdout);
      std::fflush(stdout);
      if (out.finished) {
        completion = out.completion_tokens;
        reason = out.finish_reason;
      }
    }
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const EngineStats& s = engine->stats();
  std::fprintf(stderr,
               "\n--- stats ---\n"
               "prompt:   %lld tokens in %.3f s = %.1f tokens/s (prefill)\n"
               "output:   %lld tokens (finish: %s); decode %.3f s = %.1f tokens/s\n"
               "seed:     %llu\n"
               "memory:   peak RSS %.1f MiB, KV cache %.1f MiB, KV pages in use at end %d of %d\n",
               static_cast<long long>(s.prompt_tokens), s.prefill_seconds,
               s.prefill_seconds > 0 ? s.prompt_tokens / s.prefill_seconds : 0.0,
               static_cast<long long>(completion), std::string(finish_reason_name(reason)).c_str(),
               s.decode_seconds, s.decode_seconds > 0 ? s.decode_tokens / s.decode_seconds : 0.0,
               static_cast<unsigned long long>(*o.sampling.seed), peak_rss_bytes() / 1048576.0,
               engine->kv_cache().bytes() / 1048576.0, engine->blocks().pool().num_used(),
               engine->blocks().pool().num_pages());
  if (o.stats) print_sparse_stats(*engine);
  return 0;
}

}  // namespace

Command add_generate_command(CLI::App& app) {
  auto opts = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate text for one prompt (streamed to stdout; timing and memory to stderr)");
  add_model_options(*cmd, opts->model);
  add_sampling_options(*cmd, opts->sampling, opts->seed_text);
  add_generation_config_option(*cmd, opts->generation_config);
  cmd->add_option("-p,--prompt", opts->prompt,
                  "Prompt text (default: read --prompt-file or stdin)");
  cmd->add_option("-f,--prompt-file", opts->prompt_file, "Read the prompt from this file")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--chat", opts->chat,
                "Wrap the prompt as a user message in the model's chat template");
  cmd->add_option("--system", opts->system, "System message for --chat");
  cmd->add_option("--assistant-prefix", opts->assistant_prefix,
                  "With --chat: the reply starts with this text and the model continues it (the "
                  "server's continue_final_message); stdout shows only the continuation")
      ->needs("--chat");
  cmd->add_option(
      "--chat-template,--chat-template-file", opts->chat_template,
      "The chat template instead of the model's: a Jinja file, Jinja text itself (when it "
      "contains {{ or {%), or a builtin: chatml, llama3");
  cmd->add_flag("--show-prompt", opts->show_prompt, "Print the final prompt text to stderr");
  cmd->add_flag("--stats", opts->stats,
                "Also report what sparse attention saves: KV bytes read per decode step vs dense, "
                "the selector's share, and KV pool memory in use");
  return [opts, cmd] {
    opts->explicit_fields = explicit_sampling_fields(*cmd);
    return run_generate(*opts);
  };
}

}  // namespace lserve::app
