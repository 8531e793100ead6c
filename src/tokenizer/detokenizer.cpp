#include "tokenizer/detokenizer.h"

#include "tokenizer/utf8.h"

namespace lserve {

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  const std::string& bytes = tokenizer_.token_bytes(id);  // validates the id even when skipped
  if (skip_special_ && tokenizer_.is_control(id)) return {};
  pending_ += bytes;
  std::string out;
  std::string_view rest(pending_);
  while (!rest.empty()) {
    if (const size_t n = utf8::valid_sequence_length(rest); n > 0) {
      out.append(rest.substr(0, n));
      rest.remove_prefix(n);
    } else if (utf8::incomplete_prefix_length(rest) == rest.size()) {
      break;  // the start of a character whose remaining bytes are still to come
    } else {
      out += utf8::kReplacement;
      rest.remove_prefix(utf8::invalid_prefix_length(rest));
    }
  }
  pending_.erase(0, pending_.size() - rest.size());
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out = utf8::sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace lserve
