// Byte-level BPE: merge order, special tokens, round trips and spec validation, on small hand-made
// vocabularies (256 byte tokens + a few merges).
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "core/error.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

using Merges = std::vector<std::pair<std::string, std::string>>;

// Ids 0..255 are the bytes in order; each merge (given in raw bytes) adds its result if new.
TokenizerSpec byte_vocab(const Merges& merges, std::string pre = "gpt2") {
  TokenizerSpec spec;
  spec.pre = std::move(pre);
  for (int b = 0; b < 256; ++b) spec.tokens.emplace_back(byte_level::encode_byte(b));
  std::set<std::string> known(spec.tokens.begin(), spec.tokens.end());
  for (const auto& [l, r] : merges) {
    const std::string left = byte_level::encode(l);
    const std::string right = byte_level::encode(r);
    spec.merges.push_back(left + " " + right);
    if (known.insert(left + right).second) spec.tokens.push_back(left + right);
  }
  return spec;
}

int32_t add_token(TokenizerSpec& spec, std::string text, int32_t type) {
  if (spec.token_types.empty()) spec.token_types.assign(spec.tokens.size(), kTokenNormal);
  spec.tokens.push_back(std::move(text));
  spec.token_types.push_back(type);
  return static_cast<int32_t>(spec.tokens.size() - 1);
}

// The raw bytes of each token of `text`'s encoding.
std::vector<std::string> pieces(const Tokenizer& tok, std::string_view text, bool special = true) {
  std::vector<std::string> out;
  for (int32_t id : tok.encode(text, special)) out.push_back(tok.token_bytes(id));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(Tokenizer, MergesApplyInRankOrder) {
  EXPECT_EQ(pieces(Tokenizer(byte_vocab({{"a", "b"}, {"b", "c"}})), "abc"), (Pieces{"ab", "c"}));
  EXPECT_EQ(pieces(Tokenizer(byte_vocab({{"b", "c"}, {"a", "b"}})), "abc"), (Pieces{"a", "bc"}));
  // A merge made later can enable a pair of lower priority than one already queued.
  EXPECT_EQ(pieces(Tokenizer(byte_vocab({{"b", "c"}, {"a", "bc"}, {"a", "b"}})), "abc"),
            (Pieces{"abc"}));
  const Tokenizer hello(byte_vocab({{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}}));
  EXPECT_EQ(pieces(hello, "hello"), (Pieces{"hello"}));
  EXPECT_EQ(pieces(hello, "hellohe"), (Pieces{"hello", "he"}));
}

TEST(Tokenizer, EqualRanksMergeLeftmostFirst) {
  const Tokenizer tok(byte_vocab({{"a", "a"}, {"aa", "aa"}}));
  EXPECT_EQ(pieces(tok, "aaa"), (Pieces{"aa", "a"}));
  EXPECT_EQ(pieces(tok, "aaaaa"), (Pieces{"aaaa", "a"}));
  EXPECT_EQ(pieces(tok, "aaaaaaa"), (Pieces{"aaaa", "aa", "a"}));
}

TEST(Tokenizer, LongPieceMergesQuickly) {
  const Tokenizer tok(byte_vocab({{"a", "a"}, {"aa", "aa"}, {"aaaa", "aaaa"}}));
  const auto ids = tok.encode(std::string(200'001, 'a'));
  ASSERT_EQ(ids.size(), 25'001u);
  EXPECT_EQ(tok.token_bytes(ids[0]), "aaaaaaaa");
  EXPECT_EQ(tok.token_bytes(ids.back()), "a");
}

// Straightforward BPE: rescan for the best pair after every merge.
Pieces naive_bpe(const std::string& text,
                 const std::map<std::pair<std::string, std::string>, int>& ranks) {
  Pieces syms;
  for (char c : text) syms.emplace_back(1, c);
  for (;;) {
    int best = -1;
    int best_rank = 0;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      const auto it = ranks.find({syms[i], syms[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best_rank)) {
        best = static_cast<int>(i);
        best_rank = it->second;
      }
    }
    if (best < 0) return syms;
    syms[best] += syms[best + 1];
    syms.erase(syms.begin() + best + 1);
  }
}

TEST(Tokenizer, MatchesNaiveBpeOnRandomMerges) {
  const unsigned seed = std::random_device{}();
  std::cout << "[ seed     ] " << seed << "\n";
  std::mt19937 rng(seed);
  for (int round = 0; round < 20; ++round) {
    Pieces alphabet = {"a", "b", "c", "d"};
    std::map<std::pair<std::string, std::string>, int> ranks;
    Merges merges;
    while (merges.size() < 60) {
      const std::string& l = alphabet[rng() % alphabet.size()];
      const std::string& r = alphabet[rng() % alphabet.size()];
      if (l.size() + r.size() > 8 ||
          !ranks.try_emplace({l, r}, static_cast<int>(merges.size())).second)
        continue;
      merges.push_back({l, r});
      alphabet.push_back(l + r);  // may repeat a token another pair already makes; that is allowed
    }
    TokenizerSpec spec = byte_vocab(merges);
    spec.pre_regexes = {"[a-d]+"};
    const Tokenizer tok(std::move(spec));
    for (int t = 0; t < 50; ++t) {
      std::string text(1 + rng() % 120, 'a');
      for (char& c : text) c = static_cast<char>('a' + rng() % 4);
      ASSERT_EQ(pieces(tok, text), naive_bpe(text, ranks)) << "seed " << seed << " text " << text;
    }
  }
}

TEST(Tokenizer, SpecialTokensAreMatchedLiterally) {
  TokenizerSpec spec = byte_vocab({{"a", "b"}});
  const int32_t start = add_token(spec, "<|im_start|>", kTokenControl);
  const int32_t prefix = add_token(spec, "<|im", kTokenControl);
  const int32_t tool = add_token(spec, "<tool>", kTokenUserDefined);
  const Tokenizer tok(std::move(spec));
  const int32_t ab = *tok.find_token("ab");
  EXPECT_EQ(tok.encode("ab<|im_start|>ab"), (std::vector<int32_t>{ab, start, ab}));
  EXPECT_EQ(tok.encode("<|im_start|><|im"), (std::vector<int32_t>{start, prefix}));
  EXPECT_EQ(tok.encode("<tool>ab"), (std::vector<int32_t>{tool, ab}));
  EXPECT_EQ(tok.encode("<|im_start"), (std::vector<int32_t>{prefix, '_', 's', 't', 'a', 'r', 't'}));
  // Without parse_special, control tokens are plain text; user-defined ones still match.
  const auto plain = tok.encode("<|im_start|><tool>", false);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), start), 0);
  EXPECT_EQ(plain.size(), 13u);  // 12 single bytes (no merges apply) + <tool>
  EXPECT_EQ(plain.back(), tool);
  EXPECT_EQ(tok.decode(plain), "<|im_start|><tool>");
  EXPECT_TRUE(tok.is_control(start));
  EXPECT_FALSE(tok.is_control(tool));
  EXPECT_FALSE(tok.is_control(ab));
  EXPECT_EQ(tok.token_bytes(start), "<|im_start|>");
}

TEST(Tokenizer, AddBos) {
  TokenizerSpec spec = byte_vocab({});
  spec.bos_id = add_token(spec, "<s>", kTokenControl);
  spec.add_bos = true;
  const Tokenizer tok(spec);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.encode("a", true, true), (std::vector<int32_t>{spec.bos_id, 'a'}));
  EXPECT_EQ(tok.encode("", true, true), (std::vector<int32_t>{spec.bos_id}));
  EXPECT_TRUE(tok.encode("").empty());
  const Tokenizer no_bos(byte_vocab({}));
  EXPECT_THROW(no_bos.encode("a", true, true), Error);
}

TEST(Tokenizer, IgnoreMergesEmitsWholePreTokens) {
  TokenizerSpec spec = byte_vocab({{"a", "b"}});
  add_token(spec, byte_level::encode("abc"),
            kTokenNormal);  // in the vocabulary, but no merge makes it
  EXPECT_EQ(pieces(Tokenizer(spec), "abc"), (Pieces{"ab", "c"}));
  spec.pre = "llama-bpe";  // implies ignore_merges, as in llama.cpp
  EXPECT_EQ(pieces(Tokenizer(spec), "abc abd"), (Pieces{"abc", " ", "ab", "d"}));
  spec.pre = "gpt2";
  spec.ignore_merges = true;
  EXPECT_EQ(pieces(Tokenizer(spec), "abc"), (Pieces{"abc"}));
}

// Random bytes (invalid UTF-8 included) survive encode/decode under every pre-tokenizer.
TEST(Tokenizer, RoundTripsRandomBytes) {
  const unsigned seed = std::random_device{}();
  std::cout << "[ seed     ] " << seed << "\n";
  std::mt19937 rng(seed);
  const std::vector<std::string> atoms = {
      "a", "b", "Z",  " ", "  ",   "\n",       "\r\n", "\t",   "7",     "42",       "'s", "'LL",
      "!", "é", "中", "😀", "\xC3", "\xE4\xB8", "\x80", "\xFF", "<|x|>", "\xC2\xA0", "٣"};
  for (const char* pre : {"gpt2", "llama-bpe", "qwen2", "smollm", "default"}) {
    TokenizerSpec spec =
        byte_vocab({{" ", "a"}, {"a", "b"}, {" a", "b"}, {"\n", "\n"}, {"4", "2"}}, pre);
    add_token(spec, "<|x|>", kTokenControl);
    const Tokenizer tok(std::move(spec));
    for (int t = 0; t < 300; ++t) {
      std::string text;
      const int n = static_cast<int>(rng() % 40);
      for (int i = 0; i < n; ++i) {
        if (rng() % 4 == 0) {
          text += static_cast<char>(rng() % 256);
        } else {
          text += atoms[rng() % atoms.size()];
        }
      }
      for (bool special : {true, false}) {
        ASSERT_EQ(tok.decode(tok.encode(text, special)), text) << "seed " << seed << " pre " << pre;
      }
    }
  }
}

TEST(Tokenizer, StopTokens) {
  TokenizerSpec spec = byte_vocab({});
  const int32_t end_text = add_token(spec, "<|endoftext|>", kTokenControl);
  const int32_t im_end = add_token(spec, "<|im_end|>", kTokenControl);
  spec.eos_id = im_end;
  const Tokenizer tok(spec);
  EXPECT_EQ(tok.stop_token_ids(), (std::vector<int32_t>{im_end, end_text}));
  EXPECT_EQ(tok.find_token("<|im_end|>"), im_end);
  EXPECT_EQ(tok.find_token("<|eot_id|>"), std::nullopt);
  EXPECT_EQ(tok.eos_id(), im_end);
  EXPECT_EQ(tok.bos_id(), -1);
}

TEST(Tokenizer, BytesWithoutTokenUseUnk) {
  TokenizerSpec spec = byte_vocab({});
  spec.tokens[0xFF] = "<unk>";  // byte 0xFF has no token now
  spec.token_types.assign(spec.tokens.size(), kTokenNormal);
  spec.token_types[0xFF] = kTokenUnknown;
  EXPECT_THROW(Tokenizer(spec).encode("a\xFF"), Error);
  spec.unk_id = 0xFF;
  EXPECT_EQ(Tokenizer(spec).encode("a\xFF"), (std::vector<int32_t>{'a', 0xFF}));
}

TEST(Tokenizer, TokenBytesAndDecode) {
  TokenizerSpec spec = byte_vocab({{" ", "w"}});
  const int32_t byte_token = add_token(spec, "<0x41>", kTokenByte);
  const Tokenizer tok(spec);
  const int32_t space_w = *tok.find_token("Ġw");
  EXPECT_EQ(tok.token_text(space_w), "Ġw");
  EXPECT_EQ(tok.token_bytes(space_w), " w");
  EXPECT_EQ(tok.token_bytes(byte_token), "A");
  EXPECT_EQ(tok.token_bytes(0xE4), "\xE4");
  const std::vector<int32_t> ids = {0xE4, 0xB8, 0xAD};
  EXPECT_EQ(tok.decode(ids), "中");
  EXPECT_THROW(tok.token_bytes(tok.vocab_size()), Error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), Error);
}

std::string error_of(const TokenizerSpec& spec) {
  try {
    Tokenizer tok(spec);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Tokenizer, RejectsBadSpecs) {
  EXPECT_NE(error_of(TokenizerSpec{}).find("vocabulary is empty"), std::string::npos);

  TokenizerSpec spec = byte_vocab({{"a", "b"}});
  spec.merges.push_back("ab xyz");
  EXPECT_NE(error_of(spec).find("merge #1 'ab xyz': token 'xyz' is not in the vocabulary"),
            std::string::npos)
      << error_of(spec);
  spec.merges.back() = "abc";
  EXPECT_NE(error_of(spec).find("not of the form 'left right'"), std::string::npos);
  spec.merges.back() = "a b c";
  EXPECT_NE(error_of(spec).find("not of the form 'left right'"), std::string::npos);

  spec = byte_vocab({});
  spec.eos_id = 256;
  EXPECT_NE(error_of(spec).find("eos token id 256 is out of range"), std::string::npos);
  spec = byte_vocab({});
  spec.add_bos = true;
  EXPECT_NE(error_of(spec).find("no bos token"), std::string::npos);
  spec = byte_vocab({});
  spec.token_types = {1, 1};
  EXPECT_NE(error_of(spec).find("2 token types for 256 tokens"), std::string::npos);
  spec = byte_vocab({});
  spec.token_types.assign(256, 9);
  EXPECT_NE(error_of(spec).find("unknown type 9"), std::string::npos);
  spec = byte_vocab({}, "nonesuch");
  EXPECT_NE(error_of(spec).find("unknown pre-tokenizer 'nonesuch'"), std::string::npos);
  spec = byte_vocab({});
  spec.pre_regexes = {"(unclosed"};
  EXPECT_NE(error_of(spec).find("bad regex '(unclosed'"), std::string::npos);
}

}  // namespace
}  // namespace lserve
