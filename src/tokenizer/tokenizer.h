// BPE tokenizers built from a format-independent TokenizerSpec that GGUF metadata or HF
// tokenizer.json fill in: byte-level BPE (GPT-2 family: SmolLM, Llama-3, Qwen2, ...) and
// SentencePiece-style BPE (Llama 2, Mistral, Gemma: spaces as U+2581, byte fallback).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"

namespace lserve {

// GGUF token types (tokenizer.ggml.token_type).
enum TokenType : int32_t {
  kTokenUndefined = 0,
  kTokenNormal = 1,
  kTokenUnknown = 2,
  kTokenControl = 3,
  kTokenUserDefined = 4,
  kTokenUnused = 5,
  kTokenByte = 6,
};

// How text becomes the symbols that BPE merges.
enum class TokenizerKind : uint8_t {
  // Bytes in GPT-2's byte-to-unicode alphabet, split by pre-tokenizer regexes first.
  kByteLevel,
  // UTF-8 characters with spaces written as U+2581 ("▁"); a character without a token becomes
  // its <0xNN> byte tokens (byte fallback), or the unknown token.
  kSentencePiece,
};

// Where a SentencePiece-style tokenizer puts a "▁" in front of the text it encodes.
enum class SpacePrefix : uint8_t {
  kNone,
  // Each run of text between special tokens (SentencePiece's dummy prefix as llama.cpp applies
  // it, HF's Prepend normaliser and Metaspace prepend_scheme "always").
  kEverySegment,
  // Only text that starts the input (HF Metaspace prepend_scheme "first").
  kFirstSegment,
};

struct TokenizerSpec {
  TokenizerKind kind = TokenizerKind::kByteLevel;
  // Token strings as stored in GGUF / tokenizer.json: normal tokens in GPT-2's byte-to-unicode
  // alphabet (byte-level) or as UTF-8 with "▁" for spaces (SentencePiece); control and
  // user-defined tokens as plain text; byte tokens as "<0xNN>".
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // TokenType per token; empty means all normal
  std::vector<std::string> merges;   // "left right"; rank = index
  // SentencePiece without merges (GGUF "llama"): any two adjacent symbols whose concatenation is
  // a token merge, highest score first. One score per token; empty means all equal.
  std::vector<float> scores;
  SpacePrefix space_prefix = SpacePrefix::kEverySegment;  // SentencePiece only
  // HF Metaspace adds no prefix to text that already starts with "▁" (or a space); SentencePiece
  // and HF's Prepend normaliser always do.
  bool prefix_skips_leading_space = false;
  // SentencePiece: decode() drops one leading space, the inverse of the prefix (HF decoder Strip).
  bool decode_strips_space = false;
  bool fuse_unk = false;  // consecutive unknown characters give one unknown token (HF fuse_unk)
  // Pre-tokenizer name as in GGUF tokenizer.ggml.pre: gpt2, default, llama-bpe, qwen2, smollm...
  std::string pre = "gpt2";
  // If non-empty, overrides `pre`: applied in sequence, each splitting the previous one's pieces.
  std::vector<std::string> pre_regexes;
  // A pre-token that is itself a token is emitted whole, skipping the merges (HF model
  // `ignore_merges`). Always on for pre "llama-bpe", as llama.cpp does for Llama-3.
  bool ignore_merges = false;
  int32_t bos_id = -1, eos_id = -1, eot_id = -1, unk_id = -1, pad_id = -1;
  bool add_bos = false;
  std::string chat_template;  // Jinja source from the model; may be empty
};

class Tokenizer {
 public:
  // Validates the spec (merges name known tokens, ids in range, regexes compile); Error otherwise.
  explicit Tokenizer(TokenizerSpec spec);

  // Reads HF tokenizer.json (+ optional tokenizer_config.json, may be empty) into a spec.
  static TokenizerSpec spec_from_hf_json(const std::string& tokenizer_json_text,
                                         const std::string& tokenizer_config_json_text);

  // parse_special: control tokens written in the text (e.g. "<|im_start|>") become their ids;
  // user-defined tokens always do (as in llama.cpp and HF). add_bos prepends bos_id().
  std::vector<int32_t> encode(std::string_view text, bool parse_special = true,
                              bool add_bos = false) const;
  // Raw bytes; may be invalid UTF-8 where a character is split across the given ids. A
  // SentencePiece tokenizer with decode_strips_space drops the leading space of the result.
  std::string decode(std::span<const int32_t> ids) const;
  // Raw bytes of one token as it reads inside a text ("▁the" gives " the"); control and
  // user-defined tokens give their text.
  const std::string& token_bytes(int32_t id) const;
  // The token's string as stored in the vocabulary (byte-level alphabet for normal tokens).
  const std::string& token_text(int32_t id) const;

  int32_t vocab_size() const { return static_cast<int32_t>(spec_.tokens.size()); }
  int32_t bos_id() const { return spec_.bos_id; }
  int32_t eos_id() const { return spec_.eos_id; }
  int32_t eot_id() const { return spec_.eot_id; }
  int32_t unk_id() const { return spec_.unk_id; }
  int32_t pad_id() const { return spec_.pad_id; }
  bool add_bos() const { return spec_.add_bos; }

  // Exact lookup of a token string (e.g. "<|im_end|>", or "Ġthe" for a normal token).
  std::optional<int32_t> find_token(std::string_view text) const;
  // eos, eot and the end-of-turn tokens of known templates present in the vocabulary
  // (<|im_end|>, <|eot_id|>, <|eom_id|>, <|end_of_text|>, <|endoftext|>), without duplicates.
  std::vector<int32_t> stop_token_ids() const;
  bool is_control(int32_t id) const;
  int32_t token_type(int32_t id) const;
  const std::string& chat_template_source() const { return spec_.chat_template; }
  const std::vector<std::string>& pre_regexes() const { return pre_tokenizer_.regexes(); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct SpecialToken {
    std::string text;
    int32_t id;
    bool needs_parse_special;  // control/unknown tokens; user-defined ones always match
  };

  void validate_and_index();
  void check_id(int32_t id) const;
  // Pre-tokenizes and BPE-encodes text that contains no special tokens; `at_start`: the text
  // begins the input (for SpacePrefix::kFirstSegment).
  void encode_plain(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  // SentencePiece-style encoding of one segment (spm.cpp).
  void encode_spm(std::string_view text, bool at_start, std::vector<int32_t>& out) const;
  // Merges the UTF-8 characters of `piece` by token score and appends the result (spm.cpp).
  void merge_by_score(std::string_view piece, std::vector<int32_t>& out) const;
  // Appends `text`, which has no token, as byte tokens, or as the unknown token (returns true).
  bool append_unknown(std::string_view text, std::vector<int32_t>& out) const;
  // The token spelled `text` that SentencePiece merges may produce (normal, user-defined or
  // unused), or -1.
  int32_t mergeable_token(std::string_view text) const;

  TokenizerSpec spec_;
  std::vector<std::string> token_bytes_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> token_ids_;
  std::array<int32_t, 256> byte_tokens_{};  // token of each single byte, -1 if none
  BpeMerges merges_;
  std::vector<SpecialToken> specials_;                            // longest first
  std::array<std::vector<int32_t>, 256> specials_by_first_byte_;  // indices into specials_
  PreTokenizer pre_tokenizer_;
  bool ignore_merges_ = false;
  bool spm_pre_split_ = false;  // SentencePiece: pre_regexes split the normalised text
};

}  // namespace lserve
