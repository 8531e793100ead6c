// Runs eval cases through the real engine, dense and sparse side by side: every case is submitted
// once per mode (dense through the per-request override), all at once, so the scheduler batches
// them; progress goes to stderr.
#pragma once

#include <string>
#include <vector>

#include "engine/engine.h"
#include "eval/tasks.h"

namespace lserve::eval {

struct EvalResult {
  const EvalCase* c = nullptr;
  std::string mode;  // "dense" or "sparse"
  std::string output;
  double score = 0;
  int prompt_tokens = 0;
};

// The prompt's token ids: the user message in the model's chat template (plain text when it has
// none), then the answer prefix as the start of the assistant's turn.
std::vector<int32_t> encode_case(const Tokenizer& tok, const std::string& user,
                                 const std::string& answer_prefix);

std::vector<EvalResult> run_cases(Engine& engine, const std::vector<EvalCase>& cases,
                                  const std::vector<std::string>& modes, const std::string& label);

}  // namespace lserve::eval
