#include "sparse/passkey.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>

namespace lserve {

PasskeyPrompt make_passkey_prompt(int approx_words, double depth, uint64_t seed) {
  // The classic passkey-retrieval format (repeated filler, Mohtashami & Jaggi 2023): the filler is
  // deliberately monotonous so that only the passkey sentence carries information.
  static constexpr const char* kFiller =
      "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
  constexpr int kFillerWords = 18;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> digit(0, 9);
  PasskeyPrompt p;
  p.passkey = fmt::format("{}", 1 + rng() % 9);
  for (int i = 0; i < 4; ++i) p.passkey += static_cast<char>('0' + digit(rng));
  const int blocks = std::max(1, approx_words / kFillerWords);
  const int at = std::clamp(static_cast<int>(depth * blocks), 0, blocks);
  p.text =
      "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
      "it. I will quiz you about the important information there.\n\n";
  for (int b = 0; b <= blocks; ++b) {
    if (b == at) {
      p.text += fmt::format("The pass key is {}. Remember it. {} is the pass key. ", p.passkey,
                            p.passkey);
    }
    if (b < blocks) p.text += kFiller;
  }
  p.text += "\n\nWhat is the pass key? The pass key is";
  return p;
}

}  // namespace lserve
