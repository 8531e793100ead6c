// Incremental detokenization never emits part of a character.
#include <gtest/gtest.h>

#include <random>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace lserve {
namespace {

// Byte tokens 0..255, a few tokens that end mid-character, and one control token (id 259).
Tokenizer make_tokenizer() {
  TokenizerSpec spec;
  for (int b = 0; b < 256; ++b) spec.tokens.emplace_back(byte_level::encode_byte(b));
  spec.tokens.push_back(byte_level::encode("a\xE4"));      // 256: 'a' + first byte of 中
  spec.tokens.push_back(byte_level::encode("\xB8\xAD!"));  // 257: rest of 中 + '!'
  spec.tokens.push_back(byte_level::encode("\xF0\x9F"));   // 258: half an emoji
  spec.tokens.push_back("<|im_end|>");                     // 259
  spec.token_types.assign(spec.tokens.size(), kTokenNormal);
  spec.token_types[259] = kTokenControl;
  return Tokenizer(spec);
}

bool is_valid_utf8(std::string_view s) { return utf8::sanitize(s) == s; }

TEST(Detok, HoldsSplitCharactersUntilComplete) {
  const Tokenizer tok = make_tokenizer();
  IncrementalDetokenizer d(tok);
  EXPECT_EQ(d.push(256), "a");
  EXPECT_EQ(d.pending_bytes(), 1u);
  EXPECT_EQ(d.push(257), "中!");
  EXPECT_EQ(d.push(258), "");
  EXPECT_EQ(d.push(0x98), "");
  EXPECT_EQ(d.push(0x80), "😀");
  for (int b : {0xC3, 0xA9}) EXPECT_EQ(d.push(b), b == 0xC3 ? "" : "é");
  EXPECT_EQ(d.flush(), "");
}

TEST(Detok, SkipsControlTokensByDefault) {
  const Tokenizer tok = make_tokenizer();
  IncrementalDetokenizer skip(tok);
  EXPECT_EQ(skip.push('x'), "x");
  EXPECT_EQ(skip.push(259), "");
  IncrementalDetokenizer keep(tok, /*skip_special=*/false);
  EXPECT_EQ(keep.push(259), "<|im_end|>");
  EXPECT_THROW(keep.push(260), Error);
  EXPECT_THROW(keep.push(-1), Error);
}

TEST(Detok, IllFormedBytesBecomeReplacementCharacters) {
  const Tokenizer tok = make_tokenizer();
  IncrementalDetokenizer d(tok);
  EXPECT_EQ(d.push(0x80), "\uFFFD");  // a stray continuation byte is known bad at once
  EXPECT_EQ(d.push(0xE4), "");
  EXPECT_EQ(d.push(0xB8), "");
  EXPECT_EQ(d.push('a'), "\uFFFDa");  // one U+FFFD for the truncated sequence
  EXPECT_EQ(d.push(0xC0), "\uFFFD");  // never valid (overlong lead)
  EXPECT_EQ(d.push(0xED), "");
  EXPECT_EQ(d.push(0xA0), "\uFFFD\uFFFD");  // a surrogate: ED is cut off, A0 is stray
  EXPECT_EQ(d.push(258), "");
  EXPECT_EQ(d.flush(), "\uFFFD");
  EXPECT_EQ(d.pending_bytes(), 0u);
  EXPECT_EQ(d.flush(), "");
}

// Random valid text, encoded as random runs of byte tokens and the mid-character tokens: each push
// yields valid UTF-8 and the pushes add up to the text.
TEST(Detok, RandomStreamsNeverSplitCharacters) {
  const unsigned seed = std::random_device{}();
  std::cout << "[ seed     ] " << seed << "\n";
  std::mt19937 rng(seed);
  const Tokenizer tok = make_tokenizer();
  const std::vector<std::string> chars = {"a", "!", " ", "é", "中", "😀", "\n", "ß", "€"};
  for (int round = 0; round < 200; ++round) {
    std::string text;
    std::vector<int32_t> ids;
    for (int i = 0, n = static_cast<int>(rng() % 30); i < n; ++i) {
      const std::string& c = chars[rng() % chars.size()];
      if (c == "中" && !ids.empty() && ids.back() == 'a' && rng() % 2 == 0) {
        ids.back() = 256;  // 'a' + first byte of 中, as one token
        ids.push_back(0xB8);
        ids.push_back(0xAD);
      } else if (c == "😀" && rng() % 2 == 0) {
        ids.insert(ids.end(), {258, 0x98, 0x80});
      } else {
        for (unsigned char b : c) ids.push_back(b);
      }
      text += c;
      if (rng() % 5 == 0) ids.push_back(259);  // control tokens are skipped
    }
    IncrementalDetokenizer d(tok);
    std::string out;
    for (int32_t id : ids) {
      const std::string piece = d.push(id);
      ASSERT_TRUE(is_valid_utf8(piece)) << "seed " << seed;
      out += piece;
    }
    ASSERT_EQ(d.pending_bytes(), 0u);
    out += d.flush();
    ASSERT_EQ(out, text) << "seed " << seed;
  }
}

TEST(Detok, Utf8Helpers) {
  EXPECT_EQ(utf8::sanitize("ok \xE2\x82 x \xF4\x90\x80\x80 \xEF\xBF\xBD"),
            "ok \uFFFD x \uFFFD\uFFFD\uFFFD\uFFFD \uFFFD");
  EXPECT_EQ(utf8::incomplete_prefix_length("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_prefix_length("\xF0\x20"), 0u);
  EXPECT_EQ(utf8::valid_sequence_length("\xF0\x9F\x98\x80"), 4u);
  EXPECT_EQ(utf8::valid_sequence_length("\xE0\x80\x80"), 0u);  // overlong
}

}  // namespace
}  // namespace lserve
