// Streaming detokenization: turns generated token ids into text that is always valid UTF-8, holding
// back the bytes of a character that is split across tokens until it is complete.
#pragma once

#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace lserve {

class IncrementalDetokenizer {
 public:
  // The tokenizer must outlive the detokenizer. skip_special: control tokens (<|im_end|>...)
  // produce no text.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer, bool skip_special = true);

  // Text completed by this token: whole characters only; ill-formed bytes become U+FFFD as soon as
  // they are known to be ill-formed.
  std::string push(int32_t id);

  // Ends the stream: returns any held bytes (an unfinished character becomes U+FFFD) and resets.
  std::string flush();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace lserve
