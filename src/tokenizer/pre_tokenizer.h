// Pre-tokenization: splits text into the pieces that BPE merges never cross, by a sequence of
// regexes. Each regex splits every piece of the previous one; the text between two matches is a
// piece too, so the pieces always concatenate back to the input.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lserve {

class PreTokenizer {
 public:
  // Compiles the regexes (PCRE2, Unicode properties on) once; a bad pattern is an Error.
  explicit PreTokenizer(std::vector<std::string> regexes);

  // The regex sequence of a named pre-tokenizer, as GGUF's tokenizer.ggml.pre names them.
  static std::vector<std::string> regexes_for(std::string_view name);

  // Calls `emit` with every non-empty piece of `text`, in order. Safe to call concurrently.
  void split(std::string_view text, const std::function<void(std::string_view)>& emit) const;

  const std::vector<std::string>& regexes() const { return regexes_; }

 private:
  struct Compiled;
  std::vector<std::string> regexes_;
  // Compiled code is immutable after construction, so copies of a tokenizer share it.
  std::shared_ptr<const Compiled> compiled_;
};

// The published pre-tokenizer patterns, for tests and for callers that build their own sequence.
namespace pre_regex {
// GPT-2 / HF ByteLevel(use_regex=true).
inline constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama-3: case-insensitive contractions, letters glued to one leading non-letter, 1-3 digit
// groups.
inline constexpr std::string_view kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: Llama-3 with single digits.
inline constexpr std::string_view kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";
// HF Digits(individual_digits=true) / (false).
inline constexpr std::string_view kEachDigit = R"(\p{N})";
inline constexpr std::string_view kDigitRuns = R"(\p{N}+)";
// llama.cpp's "default" set: punctuation runs, then GPT-2, digit runs, then ASCII digit triples.
inline constexpr std::string_view kDefaultPunctuation = R"([\p{P}\$\+<=>\^~\|]+)";
inline constexpr std::string_view kDefaultDigitTriples = R"([0-9][0-9][0-9])";
}  // namespace pre_regex

}  // namespace lserve
