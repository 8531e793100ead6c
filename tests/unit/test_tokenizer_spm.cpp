// SentencePiece-style tokenizers (Llama 2, Mistral, Gemma). The fixtures come from
// scripts/make-spm-fixtures.py: a small SentencePiece BPE model trained with Llama 2's settings,
// stored as GGUF tokenizer metadata and as a tokenizer.json, with the ids and decodings that
// SentencePiece itself and the `tokenizers` library give for a set of test strings.
#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "gguf_writer.h"
#include "io/gguf.h"
#include "model/model_loader.h"
#include "test_util.h"
#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

using nlohmann::json;

json read_json(const std::string& name) {
  std::ifstream in(test::fixture_path(name));
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  return json::parse(in);
}

Tokenizer gguf_tokenizer(const std::string& name) {
  GgufFile g(test::fixture_path(name));
  return Tokenizer(tokenizer_spec_from_gguf(g));
}

// The fixture's tokenizer.json with the keys of one variant replaced.
Tokenizer hf_tokenizer(const json& variant_patch) {
  json tok = read_json("spm_tokenizer.json");
  for (const auto& [key, value] : variant_patch.items()) tok[key] = value;
  return Tokenizer(Tokenizer::spec_from_hf_json(tok.dump(), ""));
}

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

// Checks every fixture string: ids and decoding against the references named, and that plain
// strings (no special tokens, no literal "▁") decode back to themselves. Returns how many
// strings matched in full.
int check_cases(const Tokenizer& tok, const std::string& plain_ids, const std::string& plain_text,
                const std::string& special_ids, const std::string& special_text, bool round_trips) {
  const json expected = read_json("spm_expected.json");
  int matched = 0;
  for (const json& c : expected.at("cases")) {
    const std::string text = c.at("text");
    SCOPED_TRACE("text: '" + text + "'");
    const bool special = c.at("special");
    const auto want = ids_of(c.at(special ? special_ids : plain_ids));
    const auto got = tok.encode(text, /*parse_special=*/true);
    EXPECT_EQ(got, want);
    const std::string want_text = c.at(special ? special_text : plain_text);
    EXPECT_EQ(tok.decode(got), want_text);
    bool ok = got == want && tok.decode(got) == want_text;
    if (round_trips && !special && text.find("\xE2\x96\x81") == std::string::npos) {
      EXPECT_EQ(tok.decode(tok.encode(text, true)), text);
      ok = ok && tok.decode(tok.encode(text, true)) == text;
    }
    matched += ok;
  }
  EXPECT_EQ(matched, static_cast<int>(expected.at("cases").size()));
  return matched;
}

TEST(SpmFixture, SentencePieceAndTokenizersAgreeOnPlainText) {
  // The premise of the tests below: for text without special tokens the Llama-form tokenizer.json
  // encodes exactly as SentencePiece (and the Gemma form as SentencePiece without the prefix).
  const json expected = read_json("spm_expected.json");
  int plain = 0;
  for (const json& c : expected.at("cases")) {
    if (c.at("special")) continue;
    ++plain;
    EXPECT_EQ(c.at("spm"), c.at("hf_llama")) << c.at("text");
    EXPECT_EQ(c.at("spm_no_prefix"), c.at("hf_gemma")) << c.at("text");
  }
  EXPECT_GE(plain, 30);
}

TEST(SpmGguf, EncodesAndDecodesAsSentencePiece) {
  const Tokenizer tok = gguf_tokenizer("spm_tokenizer.gguf");
  // Strings with special tokens follow the Llama-form tokenizer.json: the "▁" prefix goes before
  // every run of text between special tokens, as llama.cpp does.
  check_cases(tok, "spm", "spm_decoded", "hf_llama", "hf_llama_decoded", true);
  const json expected = read_json("spm_expected.json");
  EXPECT_EQ(tok.bos_id(), expected.at("bos_id"));
  EXPECT_EQ(tok.eos_id(), expected.at("eos_id"));
  EXPECT_EQ(tok.unk_id(), expected.at("unk_id"));
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.encode("Hello", true, true).front(), tok.bos_id());
  EXPECT_TRUE(tok.is_control(tok.bos_id()));
  EXPECT_EQ(tok.token_type(*tok.find_token("<0x41>")), kTokenByte);
  EXPECT_EQ(tok.token_bytes(*tok.find_token("<0x41>")), "A");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{}), "");
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(SpmGguf, WithoutSpacePrefixEncodesAsGemma) {
  const Tokenizer tok = gguf_tokenizer("spm_tokenizer_no_prefix.gguf");
  check_cases(tok, "spm_no_prefix", "spm_no_prefix_decoded", "hf_gemma", "hf_gemma_decoded", true);
}

TEST(SpmHfJson, EveryFormEncodesAndDecodesAsTokenizers) {
  const json expected = read_json("spm_expected.json");
  for (const auto& [name, patch] : expected.at("variants").items()) {
    SCOPED_TRACE("tokenizer.json form: " + name);
    const Tokenizer tok = hf_tokenizer(patch);
    // Metaspace forms drop the prefix of text that starts with a space, so decoding loses it.
    const bool lossless = name == "llama" || name == "gemma";
    const std::string ids = "hf_" + name;
    check_cases(tok, ids, ids + "_decoded", ids, ids + "_decoded", lossless);
  }
}

TEST(SpmHfJson, LlamaFormReadsSpecialTokensAndBos) {
  const Tokenizer tok = hf_tokenizer(json::object());
  const Tokenizer from_gguf = gguf_tokenizer("spm_tokenizer.gguf");
  EXPECT_EQ(tok.vocab_size(), from_gguf.vocab_size());
  EXPECT_EQ(tok.bos_id(), from_gguf.bos_id());
  EXPECT_EQ(tok.unk_id(), from_gguf.unk_id());
  EXPECT_TRUE(tok.add_bos());  // the post-processor puts <s> first
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    ASSERT_EQ(tok.token_bytes(id), from_gguf.token_bytes(id)) << id;
    ASSERT_EQ(tok.token_type(id) == kTokenByte, from_gguf.token_type(id) == kTokenByte) << id;
  }
  // Control tokens are parsed only when asked for; then they are text like any other.
  EXPECT_EQ(tok.encode("[INST]", true), std::vector<int32_t>{*tok.find_token("[INST]")});
  EXPECT_GT(tok.encode("[INST]", false).size(), 1u);
}

TEST(SpmDetokenizer, StreamsByteFallbackCharactersWhole) {
  const Tokenizer tok = gguf_tokenizer("spm_tokenizer.gguf");
  for (const std::string text :
       {"rare 龘 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "emoji 😀🎉 and 👨‍👩‍👧‍👦 family", "Größe"}) {
    IncrementalDetokenizer d(tok);
    std::string streamed;
    for (int32_t id : tok.encode(text)) streamed += d.push(id);
    streamed += d.flush();
    // Streaming keeps the prefix's space: the tokens continue a text, they do not start one.
    EXPECT_EQ(streamed, " " + text);
  }
}

// ---- behaviour on hand-made vocabularies ----------------------------------------------------

// A score-merged (GGUF-style) vocabulary: "▁", a, b, c, the given extra pieces, byte tokens for
// the bytes listed, and <unk>.
TokenizerSpec small_spec(const std::vector<std::pair<std::string, float>>& pieces,
                         const std::string& byte_tokens = "") {
  TokenizerSpec s;
  s.kind = TokenizerKind::kSentencePiece;
  s.space_prefix = SpacePrefix::kNone;
  s.tokens = {"<unk>", "\xE2\x96\x81", "a", "b", "c"};
  s.token_types = {kTokenUnknown, kTokenNormal, kTokenNormal, kTokenNormal, kTokenNormal};
  s.scores = {0, -10, -10, -10, -10};
  for (const auto& [text, score] : pieces) {
    s.tokens.push_back(text);
    s.token_types.push_back(kTokenNormal);
    s.scores.push_back(score);
  }
  for (unsigned char b : byte_tokens) {
    s.tokens.push_back(fmt::format("<0x{:02X}>", b));
    s.token_types.push_back(kTokenByte);
    s.scores.push_back(0);
  }
  s.unk_id = 0;
  return s;
}

std::vector<std::string> pieces(const Tokenizer& tok, std::string_view text) {
  std::vector<std::string> out;
  for (int32_t id : tok.encode(text)) out.push_back(tok.token_text(id));
  return out;
}

using Pieces = std::vector<std::string>;

TEST(SpmMerge, HighestScoreFirstThenLeftmost) {
  EXPECT_EQ(pieces(Tokenizer(small_spec({{"ab", -2}, {"bc", -1}})), "abc"), (Pieces{"a", "bc"}));
  EXPECT_EQ(pieces(Tokenizer(small_spec({{"ab", -1}, {"bc", -2}})), "abc"), (Pieces{"ab", "c"}));
  EXPECT_EQ(pieces(Tokenizer(small_spec({{"ab", -1}, {"bc", -1}})), "abc"), (Pieces{"ab", "c"}));
  // Any two symbols merge when the result is a piece; no merge list is needed.
  EXPECT_EQ(pieces(Tokenizer(small_spec({{"ab", -1}, {"abab", -3}})), "abab"), (Pieces{"abab"}));
}

TEST(SpmMerge, UnusedPiecesAreSplitBack) {
  TokenizerSpec s = small_spec({{"ab", -1}, {"abc", -2}});
  s.token_types[5] = kTokenUnused;  // "ab" may be an intermediate step but is never emitted
  EXPECT_EQ(pieces(Tokenizer(s), "abc"), (Pieces{"abc"}));
  EXPECT_EQ(pieces(Tokenizer(s), "abb"), (Pieces{"a", "b", "b"}));
}

TEST(SpmMerge, UnknownCharactersFallBackToBytesOrUnk) {
  // "é" is C3 A9: with both byte tokens it becomes them; with one missing, <unk>.
  EXPECT_EQ(pieces(Tokenizer(small_spec({}, "\xC3\xA9")), "aé"), (Pieces{"a", "<0xC3>", "<0xA9>"}));
  EXPECT_EQ(pieces(Tokenizer(small_spec({}, "\xC3")), "aéé"), (Pieces{"a", "<unk>", "<unk>"}));
  // Invalid UTF-8 is encoded byte by byte.
  EXPECT_EQ(pieces(Tokenizer(small_spec({}, "\xFF")), "a\xFF"), (Pieces{"a", "<0xFF>"}));
  // "<0x41>" in the text is text, never the byte token.
  TokenizerSpec s = small_spec({}, "<0x41>A");
  const Tokenizer tok(s);
  for (const std::string& p : pieces(tok, "<0x41>")) EXPECT_NE(p, "<0x41>");
  EXPECT_EQ(tok.decode(tok.encode("<0x41>")), "<0x41>");
  // Without byte tokens and without an unknown token, the error names the text.
  TokenizerSpec no_unk = small_spec({});
  no_unk.unk_id = -1;
  try {
    Tokenizer(no_unk).encode("x");
    ADD_FAILURE() << "encoded a character without a token";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'x' has no token"), std::string::npos) << e.what();
  }
}

TEST(SpmMerge, RankMergesFuseUnknownCharacters) {
  TokenizerSpec s = small_spec({{"ab", 0}});
  s.scores.clear();
  s.merges = {"a b"};
  s.fuse_unk = true;
  EXPECT_EQ(pieces(Tokenizer(s), "abxyc"), (Pieces{"ab", "<unk>", "c"}));
  s.fuse_unk = false;
  EXPECT_EQ(pieces(Tokenizer(s), "abxyc"), (Pieces{"ab", "<unk>", "<unk>", "c"}));
}

TEST(SpmMerge, SpacePrefixModes) {
  TokenizerSpec s =
      small_spec({{"\xE2\x96\x81"
                   "a",
                   -1}});
  s.tokens.push_back("<s>");
  s.token_types.push_back(kTokenControl);
  s.scores.push_back(0);
  const Pieces with_prefix = {"▁a", "<s>", "▁a"};
  s.space_prefix = SpacePrefix::kEverySegment;
  EXPECT_EQ(pieces(Tokenizer(s), "a<s>a"), with_prefix);
  EXPECT_EQ(pieces(Tokenizer(s), " a"), (Pieces{"▁", "▁a"}));
  s.space_prefix = SpacePrefix::kFirstSegment;
  EXPECT_EQ(pieces(Tokenizer(s), "a<s>a"), (Pieces{"▁a", "<s>", "a"}));
  EXPECT_EQ(pieces(Tokenizer(s), "<s>a"), (Pieces{"<s>", "a"}));
  s.prefix_skips_leading_space = true;
  EXPECT_EQ(pieces(Tokenizer(s), " a"), (Pieces{"▁a"}));
  s.space_prefix = SpacePrefix::kNone;
  EXPECT_EQ(pieces(Tokenizer(s), "a a"), (Pieces{"a", "▁a"}));
}

TEST(SpmMerge, RejectsBadScores) {
  TokenizerSpec s = small_spec({});
  s.scores.pop_back();
  EXPECT_THROW(Tokenizer{s}, Error);
  s = small_spec({});
  s.scores[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(Tokenizer{s}, Error);
}

// ---- reading the formats --------------------------------------------------------------------

TEST(SpmGguf, ReadsTheSentencePieceKeys) {
  auto spec_of = [](std::vector<std::pair<std::string, test::GgufVal>> extra,
                    const std::string& model = "llama") {
    test::GgufSpec spec;
    spec.kvs = {{"tokenizer.ggml.model", test::gguf_str(model)},
                {"tokenizer.ggml.tokens",
                 test::gguf_array(test::kGgufString, {test::gguf_str("<unk>"), test::gguf_str("a"),
                                                      test::gguf_str("\xE2\x96\x81")})},
                {"tokenizer.ggml.scores",
                 test::gguf_array(test::kGgufF32,
                                  {test::gguf_f32(0), test::gguf_f32(-1), test::gguf_f32(-2)})}};
    for (auto& kv : extra) spec.kvs.push_back(std::move(kv));
    test::TempFile f("spm.gguf", test::build_gguf(spec).bytes);
    GgufFile g(f.path());
    return tokenizer_spec_from_gguf(g);
  };
  const TokenizerSpec plain = spec_of({});
  EXPECT_EQ(plain.kind, TokenizerKind::kSentencePiece);
  EXPECT_EQ(plain.scores, (std::vector<float>{0, -1, -2}));
  EXPECT_EQ(plain.space_prefix, SpacePrefix::kEverySegment);
  EXPECT_TRUE(plain.decode_strips_space);
  EXPECT_TRUE(plain.add_bos);  // llama.cpp's default for SentencePiece vocabularies
  EXPECT_TRUE(plain.merges.empty());
  const TokenizerSpec gemma = spec_of({{"tokenizer.ggml.add_space_prefix", test::gguf_bool(false)},
                                       {"tokenizer.ggml.add_bos_token", test::gguf_bool(false)}});
  EXPECT_EQ(gemma.space_prefix, SpacePrefix::kNone);
  EXPECT_FALSE(gemma.decode_strips_space);
  EXPECT_FALSE(gemma.add_bos);
  try {
    spec_of({}, "bert");
    ADD_FAILURE() << "accepted tokenizer model 'bert'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer model 'bert' is not supported"),
              std::string::npos)
        << e.what();
  }
}

TEST(SpmHfJson, RejectsWhatItCannotRead) {
  auto error_of = [](const json& patch) -> std::string {
    json tok = read_json("spm_tokenizer.json");
    for (const auto& [key, value] : patch.items()) tok[key] = value;
    try {
      Tokenizer t(Tokenizer::spec_from_hf_json(tok.dump(), ""));
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  auto has = [](const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
  };
  EXPECT_TRUE(has(error_of({{"normalizer", {{"type", "NFKC"}}}}), "type 'NFKC' is not supported"));
  EXPECT_TRUE(has(error_of({{"normalizer", nullptr}}), "needs spaces replaced"));
  EXPECT_TRUE(has(error_of({{"decoder", {{"type", "Strip"}, {"content", " "}, {"start", 2}}}}),
                  "only Strip of at most one leading space"));
  EXPECT_TRUE(has(
      error_of(
          {{"normalizer",
            {{"type", "Replace"}, {"pattern", {{"Regex", " "}}}, {"content", "\xE2\x96\x81"}}}}),
      "only Replace with a String pattern"));
  EXPECT_TRUE(has(error_of({{"pre_tokenizer", {{"type", "Whitespace"}}}}),
                  "type 'Whitespace' is not supported"));
  EXPECT_EQ(error_of({{"decoder", nullptr}}), "no error");
}

}  // namespace
}  // namespace lserve
