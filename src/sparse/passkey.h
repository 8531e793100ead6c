// Passkey-retrieval prompts: a number hidden at a chosen depth inside filler text, then a question
// about it. Used to calibrate the head profiler and to test and evaluate retrieval end to end.
#pragma once

#include <cstdint>
#include <string>

namespace lserve {

struct PasskeyPrompt {
  std::string text;     // ends with "... The pass key is", so the answer is the continuation
  std::string passkey;  // five digits
};

// About `approx_words` words of filler with the passkey sentence at `depth` (0 = start, 1 = end);
// the passkey is drawn from `seed`.
PasskeyPrompt make_passkey_prompt(int approx_words, double depth, uint64_t seed);

}  // namespace lserve
