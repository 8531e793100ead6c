// Long-context retrieval tasks for `lserve eval`: prompts of a chosen length in tokens with facts
// hidden at chosen depths, and the strings a correct answer contains.
//
//   needle        the needle-in-a-haystack test's format: one number sentence inside Paul Graham
//                 essays, at a depth of the grid
//   passkey       the passkey-retrieval format of Landmark Attention / LongLoRA: a five-digit
//                 key inside repeated filler sentences
//   niah_single, niah_multikey, niah_multivalue, niah_multiquery
//                 RULER's needle variants over the essays: "special magic numbers" for word keys,
//                 one needle; several keys (one asked); several values of one key (all asked);
//                 several keys (all asked)
//   vt            RULER's variable tracking: a chain of assignments "VAR X = ..." hidden in filler;
//                 every variable holding the value is asked for
// Scoring is RULER's string_match_all: the share of reference strings found in the output.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace lserve::eval {

struct EvalCase {
  std::string task;
  int length = 0;     // target prompt length in tokens (chat template included)
  double depth = -1;  // where the (first) fact sits, 0 = start .. 1 = end; -1: several depths
  std::string user;   // the user message
  std::string answer_prefix;  // the assistant's turn starts with this text
  std::vector<std::string> references;
  int max_tokens = 32;
};

// Text to hide facts in: Paul Graham's essays (the needle-in-a-haystack test's haystack), read
// from a folder of .txt files, or the repeated filler of the passkey test.
class Haystack {
 public:
  static Haystack essays(const std::string& dir);
  static Haystack filler();
  // The first `tokens` tokens of the text (repeated as often as needed), as text.
  std::string take(const Tokenizer& tok, int tokens) const;
  bool empty() const { return text_.empty(); }

 private:
  std::string text_;
};

const std::vector<std::string>& task_names();

// `count` cases of `task` at `length` tokens. The needle task takes depths 0, 1/(count-1), .., 1;
// the others draw their depths from `seed`. `encode` must return the token count of a user
// message and answer prefix once formatted as the model's prompt (so the length is exact).
using PromptLength = std::function<int(const std::string& user, const std::string& prefix)>;
std::vector<EvalCase> make_cases(const std::string& task, int length, int count, uint64_t seed,
                                 const Tokenizer& tok, const Haystack& essays,
                                 const PromptLength& prompt_tokens);

// RULER's string_match_all: the share of `references` that occur in `output`, ignoring case.
double score(const std::vector<std::string>& references, const std::string& output);

}  // namespace lserve::eval
