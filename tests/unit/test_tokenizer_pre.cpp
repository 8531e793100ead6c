// Pre-tokenizer regex sets on tricky strings. Expected pieces were produced independently with
// Python's `regex` module running the published patterns.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/pre_tokenizer.h"

namespace lserve {
namespace {

using Pieces = std::vector<std::string>;

Pieces split(const PreTokenizer& pre, std::string_view text) {
  Pieces out;
  pre.split(text, [&](std::string_view piece) { out.emplace_back(piece); });
  return out;
}

struct Case {
  std::string text;
  Pieces gpt2, llama3, qwen2, smollm;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"12345", {"12345"}, {"123", "45"}, {"1", "2", "3", "4", "5"}, {"1", "2", "3", "4", "5"}},
      {"a   b\n\n c",
       {"a", "  ", " b", "\n\n", " c"},
       {"a", "  ", " b", "\n\n", " c"},
       {"a", "  ", " b", "\n\n", " c"},
       {"a", "  ", " b", "\n\n", " c"}},
      {"I'M don't we'LL",
       {"I", "'", "M", " don", "'t", " we", "'", "LL"},
       {"I", "'M", " don", "'t", " we", "'LL"},
       {"I", "'M", " don", "'t", " we", "'LL"},
       {"I", "'", "M", " don", "'t", " we", "'", "LL"}},
      {"hello,world",
       {"hello", ",", "world"},
       {"hello", ",world"},
       {"hello", ",world"},
       {"hello", ",", "world"}},
      {"日本語 テスト",
       {"日本語", " テスト"},
       {"日本語", " テスト"},
       {"日本語", " テスト"},
       {"日本語", " テスト"}},
      {"hi 😀😀!", {"hi", " 😀😀!"}, {"hi", " 😀😀!"}, {"hi", " 😀😀!"}, {"hi", " 😀😀!"}},
      {"x\n\n\ny",
       {"x", "\n\n", "\n", "y"},
       {"x", "\n\n\n", "y"},
       {"x", "\n\n\n", "y"},
       {"x", "\n\n", "\n", "y"}},
      {"a.\n\nb",
       {"a", ".", "\n", "\n", "b"},
       {"a", ".\n\n", "b"},
       {"a", ".\n\n", "b"},
       {"a", ".", "\n", "\n", "b"}},
      {"abc123 45x",
       {"abc", "123", " 45", "x"},
       {"abc", "123", " ", "45", "x"},
       {"abc", "1", "2", "3", " ", "4", "5", "x"},
       {"abc", "1", "2", "3", " ", "4", "5", "x"}},
      {"a  ", {"a", "  "}, {"a", "  "}, {"a", "  "}, {"a", "  "}},
      {"  \n  x", {"  \n ", " x"}, {"  \n", " ", " x"}, {"  \n", " ", " x"}, {"  \n ", " x"}},
      {"It's 2024!!",
       {"It", "'s", " 2024", "!!"},
       {"It", "'s", " ", "202", "4", "!!"},
       {"It", "'s", " ", "2", "0", "2", "4", "!!"},
       {"It", "'s", " ", "2", "0", "2", "4", "!!"}},
      {"$1,234.56",
       {"$", "1", ",", "234", ".", "56"},
       {"$", "1", ",", "234", ".", "56"},
       {"$", "1", ",", "2", "3", "4", ".", "5", "6"},
       {"$", "1", ",", "2", "3", "4", ".", "5", "6"}},
  };
  return c;
}

TEST(TokenizerPre, Gpt2) {
  const PreTokenizer pre(PreTokenizer::regexes_for("gpt2"));
  for (const Case& c : cases()) EXPECT_EQ(split(pre, c.text), c.gpt2) << c.text;
}

TEST(TokenizerPre, Llama3) {
  const PreTokenizer pre(PreTokenizer::regexes_for("llama-bpe"));
  for (const Case& c : cases()) EXPECT_EQ(split(pre, c.text), c.llama3) << c.text;
}

TEST(TokenizerPre, Qwen2) {
  const PreTokenizer pre(PreTokenizer::regexes_for("qwen2"));
  for (const Case& c : cases()) EXPECT_EQ(split(pre, c.text), c.qwen2) << c.text;
}

TEST(TokenizerPre, SmolLM) {
  const PreTokenizer pre(PreTokenizer::regexes_for("smollm"));
  for (const Case& c : cases()) EXPECT_EQ(split(pre, c.text), c.smollm) << c.text;
}

TEST(TokenizerPre, LlamaCppDefault) {
  const PreTokenizer pre(PreTokenizer::regexes_for("default"));
  EXPECT_EQ(split(pre, "x<=y+1234"), (Pieces{"x", "<=", "y", "+", "123", "4"}));
}

TEST(TokenizerPre, UnicodeWhitespaceAndDigits) {
  const PreTokenizer gpt2(PreTokenizer::regexes_for("gpt2"));
  // NBSP and the ideographic space are \s under Unicode rules; Arabic-Indic digits are \p{N}.
  // The optional leading space of " ?\p{L}+" is U+0020 only.
  EXPECT_EQ(split(gpt2, "a\u00a0\u00a0b\u3000c"),
            (Pieces{"a", "\u00a0", "\u00a0", "b", "\u3000", "c"}));
  const PreTokenizer smollm(PreTokenizer::regexes_for("smollm"));
  EXPECT_EQ(split(smollm, "x٣٤"), (Pieces{"x", "٣", "٤"}));
}

TEST(TokenizerPre, InvalidUtf8StaysInPieces) {
  const std::string text = "ab\xFF\xFE cd\xE4\xB8 \x80";
  for (const char* name : {"gpt2", "llama-bpe", "qwen2", "smollm", "default"}) {
    const PreTokenizer pre(PreTokenizer::regexes_for(name));
    std::string joined;
    for (const std::string& p : split(pre, text)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    EXPECT_EQ(joined, text) << name;
  }
}

TEST(TokenizerPre, CustomSequenceAndErrors) {
  const PreTokenizer pre({R"(\d)", R"(\s+)"});
  EXPECT_EQ(split(pre, "ab 12  c"), (Pieces{"ab", " ", "1", "2", "  ", "c"}));
  EXPECT_TRUE(split(pre, "").empty());
  EXPECT_THROW(PreTokenizer({}), Error);
  EXPECT_THROW(PreTokenizer({"[a-"}), Error);
  EXPECT_THROW(PreTokenizer::regexes_for("unknown-pre"), Error);
}

TEST(TokenizerPre, LongWhitespaceRuns) {
  const PreTokenizer pre(PreTokenizer::regexes_for("llama-bpe"));
  const std::string text = std::string(300'000, ' ') + "x" + std::string(300'000, '\n');
  EXPECT_EQ(split(pre, text),
            (Pieces{std::string(299'999, ' '), " x", std::string(300'000, '\n')}));
}

}  // namespace
}  // namespace lserve
