#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/error.h"
#include "tokenizer/byte_level.h"

namespace lserve {
namespace {

// The whole text as one piece: what a SentencePiece tokenizer without a pre-tokenizer sees.
constexpr std::string_view kWholeText = R"([\s\S]+)";

std::vector<std::string> pre_regexes_of(const TokenizerSpec& spec) {
  if (!spec.pre_regexes.empty()) return spec.pre_regexes;
  if (spec.kind == TokenizerKind::kSentencePiece) return {std::string(kWholeText)};
  return PreTokenizer::regexes_for(spec.pre);
}

// A SentencePiece piece as text: "▁" (U+2581) stands for a space.
std::string spm_piece_text(std::string_view piece) {
  constexpr std::string_view kSpace = "\xE2\x96\x81";
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i).starts_with(kSpace)) {
      out += ' ';
      i += kSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

// Printable form of a token for error messages (tokens may hold control characters).
std::string quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 64)) {
    if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  if (s.size() > 64) out += "...";
  return out + "'";
}

// The byte of an SPM-style byte token "<0xAB>", or -1.
int byte_token_value(std::string_view text) {
  int value = -1;
  if (text.size() != 6 || !text.starts_with("<0x") || text.back() != '>') return -1;
  const auto [ptr, ec] = std::from_chars(text.data() + 3, text.data() + 5, value, 16);
  return ec == std::errc() && ptr == text.data() + 5 ? value : -1;
}

}  // namespace

Tokenizer::Tokenizer(TokenizerSpec spec)
    : spec_(std::move(spec)), pre_tokenizer_(pre_regexes_of(spec_)) {
  validate_and_index();
}

void Tokenizer::validate_and_index() {
  const auto n = static_cast<int64_t>(spec_.tokens.size());
  LSERVE_CHECK(n > 0, "tokenizer: the vocabulary is empty");
  LSERVE_CHECK(n < INT32_MAX, "tokenizer: vocabulary of {} tokens is too large", n);
  if (spec_.token_types.empty()) spec_.token_types.assign(n, kTokenNormal);
  LSERVE_CHECK(static_cast<int64_t>(spec_.token_types.size()) == n,
               "tokenizer: {} token types for {} tokens", spec_.token_types.size(), n);

  const std::pair<const char*, int32_t> ids[] = {{"bos", spec_.bos_id},
                                                 {"eos", spec_.eos_id},
                                                 {"eot", spec_.eot_id},
                                                 {"unk", spec_.unk_id},
                                                 {"pad", spec_.pad_id}};
  for (const auto& [name, id] : ids) {
    LSERVE_CHECK(id >= -1 && id < n,
                 "tokenizer: {} token id {} is out of range (vocabulary has {})", name, id, n);
  }
  LSERVE_CHECK(!spec_.add_bos || spec_.bos_id >= 0,
               "tokenizer: add_bos is set but there is no bos token");
  const bool spm = spec_.kind == TokenizerKind::kSentencePiece;
  LSERVE_CHECK(spec_.scores.empty() || static_cast<int64_t>(spec_.scores.size()) == n,
               "tokenizer: {} scores for {} tokens", spec_.scores.size(), n);
  LSERVE_CHECK(spec_.scores.empty() || spm, "tokenizer: scores are for SentencePiece vocabularies");
  for (size_t i = 0; i < spec_.scores.size(); ++i) {
    // A NaN would break the ordering of the merge queue.
    LSERVE_CHECK(std::isfinite(spec_.scores[i]), "tokenizer: score of token {} is {}", i,
                 spec_.scores[i]);
  }

  token_ids_.reserve(n);
  token_bytes_.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = spec_.tokens[id];
    const int32_t type = spec_.token_types[id];
    LSERVE_CHECK(type >= kTokenUndefined && type <= kTokenByte,
                 "tokenizer: token {} {} has unknown type {}", id, quoted(text), type);
    token_ids_.try_emplace(text, id);  // duplicates (padding entries) resolve to the first id
    if (spm && (type == kTokenNormal || type == kTokenUndefined || type == kTokenUnused)) {
      token_bytes_[id] = spm_piece_text(text);
    } else if (type == kTokenNormal || type == kTokenUndefined) {
      token_bytes_[id] = byte_level::decode(text);
    } else if (int byte = byte_token_value(text); type == kTokenByte && byte >= 0) {
      token_bytes_[id] = static_cast<char>(byte);
    } else {
      token_bytes_[id] = text;
    }
    const bool special_match = type == kTokenControl || type == kTokenUnknown;
    if ((special_match || type == kTokenUserDefined) && !text.empty()) {
      specials_.push_back({text, id, special_match});
    }
  }

  byte_tokens_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    if (!spm) {
      if (auto id = find_token(byte_level::encode_byte(static_cast<unsigned char>(b)))) {
        byte_tokens_[b] = *id;
      }
    } else if (auto id = find_token(fmt::format("<0x{:02X}>", b));
               id && spec_.token_types[*id] == kTokenByte) {
      byte_tokens_[b] = *id;
    }
  }

  for (size_t rank = 0; rank < spec_.merges.size(); ++rank) {
    const std::string& merge = spec_.merges[rank];
    const size_t space = merge.find(' ');
    LSERVE_CHECK(space != std::string::npos && space > 0 && space + 1 < merge.size() &&
                     merge.find(' ', space + 1) == std::string::npos,
                 "tokenizer: merge #{} {} is not of the form 'left right'", rank, quoted(merge));
    const std::string_view left(merge.data(), space);
    const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
    const auto left_id = find_token(left);
    const auto right_id = find_token(right);
    const auto merged_id = find_token(std::string(left) + std::string(right));
    LSERVE_CHECK(left_id && right_id && merged_id,
                 "tokenizer: merge #{} {}: token {} is not in the vocabulary", rank, quoted(merge),
                 quoted(!left_id    ? left
                        : !right_id ? right
                                    : std::string(left) + std::string(right)));
    merges_.add(*left_id, *right_id, *merged_id, static_cast<int32_t>(rank));
  }

  // Longest first, so that a special token that contains another one wins.
  std::stable_sort(
      specials_.begin(), specials_.end(),
      [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
  for (size_t i = 0; i < specials_.size(); ++i) {
    specials_by_first_byte_[static_cast<unsigned char>(specials_[i].text[0])].push_back(
        static_cast<int32_t>(i));
  }
  ignore_merges_ = spec_.ignore_merges || (!spm && spec_.pre_regexes.empty() &&
                                           (spec_.pre == "llama-bpe" || spec_.pre == "llama3"));
  spm_pre_split_ = spm && !spec_.pre_regexes.empty();
}

void Tokenizer::check_id(int32_t id) const {
  LSERVE_CHECK(id >= 0 && id < vocab_size(),
               "tokenizer: token id {} is out of range (vocabulary has {})", id, vocab_size());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool parse_special,
                                       bool add_bos) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) {
    LSERVE_CHECK(spec_.bos_id >= 0, "tokenizer: cannot add bos, the vocabulary has no bos token");
    out.push_back(spec_.bos_id);
  }
  size_t plain_start = 0;
  size_t i = 0;
  while (i < text.size()) {
    const SpecialToken* found = nullptr;
    for (int32_t index : specials_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const SpecialToken& s = specials_[index];
      if ((parse_special || !s.needs_parse_special) && text.substr(i).starts_with(s.text)) {
        found = &s;
        break;
      }
    }
    if (found == nullptr) {
      ++i;
      continue;
    }
    encode_plain(text.substr(plain_start, i - plain_start), plain_start == 0, out);
    out.push_back(found->id);
    i += found->text.size();
    plain_start = i;
  }
  encode_plain(text.substr(plain_start), plain_start == 0, out);
  return out;
}

void Tokenizer::encode_plain(std::string_view text, bool at_start,
                             std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (spec_.kind == TokenizerKind::kSentencePiece) {
    encode_spm(text, at_start, out);
    return;
  }
  BpeMerges::Scratch scratch;
  std::vector<int32_t> symbols;
  std::string mapped;
  pre_tokenizer_.split(text, [&](std::string_view piece) {
    if (ignore_merges_ && piece.size() > 1) {
      mapped.clear();
      for (char c : piece) mapped += byte_level::encode_byte(static_cast<unsigned char>(c));
      if (auto it = token_ids_.find(std::string_view(mapped)); it != token_ids_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    symbols.clear();
    for (char c : piece) symbols.push_back(byte_tokens_[static_cast<unsigned char>(c)]);
    merges_.apply(symbols, scratch);
    for (size_t k = 0; k < symbols.size(); ++k) {
      if (symbols[k] >= 0) {
        out.push_back(symbols[k]);
        continue;
      }
      // Only a vocabulary that is not fully byte-level gets here.
      LSERVE_CHECK(
          spec_.unk_id >= 0,
          "tokenizer: byte 0x{:02x} has no token in the vocabulary and there is no unknown "
          "token",
          static_cast<unsigned char>(piece[k]));
      out.push_back(spec_.unk_id);
    }
  });
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  if (spec_.decode_strips_space && out.starts_with(' ')) out.erase(0, 1);
  return out;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  check_id(id);
  return token_bytes_[id];
}

const std::string& Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return spec_.tokens[id];
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const {
  const auto it = token_ids_.find(text);
  if (it == token_ids_.end()) return std::nullopt;
  return it->second;
}

std::vector<int32_t> Tokenizer::stop_token_ids() const {
  std::vector<int32_t> ids;
  auto add = [&](int32_t id) {
    if (id >= 0 && std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  };
  add(spec_.eos_id);
  add(spec_.eot_id);
  for (std::string_view name : {"<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
                                "<|endoftext|>", "<end_of_turn>"}) {
    if (auto id = find_token(name)) add(*id);
  }
  return ids;
}

bool Tokenizer::is_control(int32_t id) const { return token_type(id) == kTokenControl; }

int32_t Tokenizer::token_type(int32_t id) const {
  check_id(id);
  return spec_.token_types[id];
}

}  // namespace lserve
