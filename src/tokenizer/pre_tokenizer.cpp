#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace lserve {

struct PreTokenizer::Compiled {
  std::vector<pcre2_code*> codes;
  ~Compiled() {
    for (pcre2_code* c : codes) pcre2_code_free(c);
  }
};

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    LSERVE_CHECK(data != nullptr, "pre-tokenizer: out of memory for regex match data");
  }
  ~MatchData() { pcre2_match_data_free(data); }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
};

// Start of the next character after `pos`; used to step over an empty match.
size_t next_char(std::string_view s, size_t pos) {
  ++pos;
  while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
  return pos;
}

// Returns false at the end of `subject` ([start, end) unset); otherwise the next match at or after
// `from`. Falls back to the interpreter if the JIT stack is too small for a pathological input.
bool find_match(const pcre2_code* code, pcre2_match_data* md, std::string_view subject, size_t from,
                size_t& start, size_t& end) {
  const auto* ptr = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = pcre2_match(code, ptr, subject.size(), from, 0, md, nullptr);
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    rc = pcre2_match(code, ptr, subject.size(), from, PCRE2_NO_JIT, md, nullptr);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  LSERVE_CHECK(rc >= 0, "pre-tokenizer: regex match failed: {}", pcre2_message(rc));
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  start = ov[0];
  end = ov[1];
  return true;
}

}  // namespace

PreTokenizer::PreTokenizer(std::vector<std::string> regexes) : regexes_(std::move(regexes)) {
  LSERVE_CHECK(!regexes_.empty(), "pre-tokenizer: no regexes given");
  auto compiled = std::make_shared<Compiled>();
  // MATCH_INVALID_UTF: arbitrary bytes must tokenize (and round-trip); invalid sequences simply
  // never match and end up in the between-match pieces.
  const uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
  for (const std::string& re : regexes_) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re.data()), re.size(), options,
                                     &error, &offset, nullptr);
    LSERVE_CHECK(code != nullptr, "pre-tokenizer: bad regex '{}' at offset {}: {}", re, offset,
                 pcre2_message(error));
    compiled->codes.push_back(code);
    // The JIT is an optimisation only: without it (unsupported CPU, no executable memory) the
    // interpreter gives the same matches.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }
  compiled_ = std::move(compiled);
}

std::vector<std::string> PreTokenizer::regexes_for(std::string_view name) {
  using namespace pre_regex;
  if (name == "gpt2" || name == "gpt-2") return {std::string(kGpt2)};
  if (name == "llama-bpe" || name == "llama3" || name == "llama-v3") return {std::string(kLlama3)};
  if (name == "qwen2") return {std::string(kQwen2)};
  // HF Sequence[Digits(individual_digits=true), ByteLevel]; llama.cpp groups StarCoder with it.
  if (name == "smollm" || name == "starcoder") return {std::string(kEachDigit), std::string(kGpt2)};
  // What llama.cpp applies to GGUF files whose converter did not recognise the pre-tokenizer;
  // matching it keeps token ids identical to llama.cpp for such files.
  if (name == "default") {
    return {std::string(kDefaultPunctuation), std::string(kGpt2), std::string(kDigitRuns),
            std::string(kDefaultDigitTriples)};
  }
  fail(
      "unknown pre-tokenizer '{}' (known: gpt2, gpt-2, llama-bpe, llama3, llama-v3, qwen2, smollm, "
      "starcoder, default)",
      name);
}

void PreTokenizer::split(std::string_view text,
                         const std::function<void(std::string_view)>& emit) const {
  const auto& codes = compiled_->codes;
  std::vector<std::unique_ptr<MatchData>> match_data;
  match_data.reserve(codes.size());
  for (const pcre2_code* code : codes) match_data.push_back(std::make_unique<MatchData>(code));

  // Depth-first over the regex levels so that no list of intermediate pieces is materialised
  // (inputs can be megabytes long).
  std::function<void(std::string_view, size_t)> split_level = [&](std::string_view piece,
                                                                  size_t level) {
    if (level == codes.size()) {
      emit(piece);
      return;
    }
    pcre2_match_data* md = match_data[level]->data;
    size_t pos = 0;
    size_t piece_start = 0;  // start of text not yet emitted
    size_t start = 0;
    size_t end = 0;
    while (pos < piece.size() && find_match(codes[level], md, piece, pos, start, end)) {
      if (end == start) {  // cannot happen with the built-in patterns; keep the text, move on
        pos = next_char(piece, start);
        continue;
      }
      if (start > piece_start)
        split_level(piece.substr(piece_start, start - piece_start), level + 1);
      split_level(piece.substr(start, end - start), level + 1);
      piece_start = pos = end;
    }
    if (piece_start < piece.size()) split_level(piece.substr(piece_start), level + 1);
  };
  if (!text.empty()) split_level(text, 0);
}

}  // namespace lserve
