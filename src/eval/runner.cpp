#include "eval/runner.h"

#include <chrono>
#include <map>

#include "core/error.h"
#include "core/log.h"
#include "tokenizer/chat_template.h"

namespace lserve::eval {

std::vector<int32_t> encode_case(const Tokenizer& tok, const std::string& user,
                                 const std::string& answer_prefix) {
  if (tok.chat_template_source().empty()) {
    return tok.encode(user + "\n\n" + answer_prefix, /*parse_special=*/false, tok.add_bos());
  }
  const ChatTemplate tmpl = ChatTemplate::resolve("", tok);
  const ChatMessage msg{"user", user};
  return encode_chat(tok, tmpl, {&msg, 1}, /*add_generation_prompt=*/true, answer_prefix);
}

std::vector<EvalResult> run_cases(Engine& engine, const std::vector<EvalCase>& cases,
                                  const std::vector<std::string>& modes, const std::string& label) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::vector<EvalResult> results;
  results.reserve(cases.size() * modes.size());
  std::map<int64_t, size_t> by_id;
  for (const EvalCase& c : cases) {
    const std::vector<int32_t> prompt = encode_case(engine.tokenizer(), c.user, c.answer_prefix);
    for (const std::string& mode : modes) {
      Request r;
      r.prompt = prompt;
      r.params.temperature = 0;
      r.params.max_tokens = c.max_tokens;
      r.sparse.dense = mode == "dense";
      EvalResult res;
      res.c = &c;
      res.mode = mode;
      res.prompt_tokens = static_cast<int>(prompt.size());
      by_id[engine.submit(std::move(r))] = results.size();
      results.push_back(std::move(res));
    }
  }
  size_t done = 0, reported = 0;
  while (engine.has_work()) {
    for (const SeqOutput& out : engine.step()) {
      EvalResult& res = results[by_id.at(out.id)];
      res.output += out.new_text;
      if (!out.finished) continue;
      LSERVE_CHECK(out.finish_reason != FinishReason::kError, "eval request failed: {}", out.error);
      res.score = score(res.c->references, res.output);
      log::debug("{} {} depth {:.2f} {}: {:.2f} '{}'", res.c->task, res.c->length, res.c->depth,
                 res.mode, res.score, res.output);
      ++done;
    }
    // Progress about every tenth of the work, and at the end.
    if (done == results.size() || done >= reported + std::max<size_t>(1, results.size() / 10)) {
      reported = done;
      log::info("eval {}: {}/{} requests done ({:.0f} s)", label, done, results.size(),
                std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  return results;
}

}  // namespace lserve::eval
