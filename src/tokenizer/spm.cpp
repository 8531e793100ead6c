// SentencePiece-style encoding (Llama 2, Mistral, Gemma): the text is normalised (spaces become
// "▁", a "▁" is put in front as SpacePrefix says), then BPE runs over its UTF-8 characters: by
// merge rank when the vocabulary has merges (HF tokenizer.json, as the `tokenizers` library does)
// or by token score (GGUF "llama", as SentencePiece's BPE model does). A character, or merged
// symbol, without a token becomes its <0xNN> byte tokens when the vocabulary has them (byte
// fallback), else the unknown token.
#include <algorithm>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace lserve {
namespace {

constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Length of the character at the start of non-empty `s`. A byte that does not start a
// well-formed character stands alone, so invalid UTF-8 still encodes (through byte fallback).
size_t char_length(std::string_view s) {
  const size_t n = utf8::valid_sequence_length(s);
  return n > 0 ? n : 1;
}

// Score merging keeps the merge tree: an unused token produced by a merge is split back into the
// two symbols it was made of, as SentencePiece does, since unused ids must never be emitted.
struct Node {
  uint32_t start, len;
  int32_t left, right;  // children; -1 for a character
};
struct Symbol {
  uint32_t start, len;  // len 0: merged into its left neighbour
  int32_t prev, next;
  int32_t node;
};
struct Candidate {
  float score;
  int32_t left, right;  // symbol indices
  uint32_t left_len, right_len;
};

// std heap functions build a max-heap: the highest score pops first, then the leftmost pair.
bool merges_later(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score < b.score;
  return a.left > b.left;
}

}  // namespace

int32_t Tokenizer::mergeable_token(std::string_view text) const {
  const auto it = token_ids_.find(text);
  if (it == token_ids_.end()) return -1;
  const int32_t type = spec_.token_types[it->second];
  // Control, unknown and byte tokens are never spelled by text; "<0x41>" in the input is six
  // characters, not byte 0x41.
  const bool mergeable = type == kTokenNormal || type == kTokenUndefined ||
                         type == kTokenUserDefined || type == kTokenUnused;
  return mergeable ? it->second : -1;
}

bool Tokenizer::append_unknown(std::string_view text, std::vector<int32_t>& out) const {
  const bool all_bytes = std::all_of(text.begin(), text.end(), [&](char c) {
    return byte_tokens_[static_cast<unsigned char>(c)] >= 0;
  });
  if (all_bytes) {
    for (char c : text) out.push_back(byte_tokens_[static_cast<unsigned char>(c)]);
    return false;
  }
  LSERVE_CHECK(spec_.unk_id >= 0,
               "tokenizer: '{}' has no token, no byte tokens and there is no unknown token",
               utf8::sanitize(text));
  out.push_back(spec_.unk_id);
  return true;
}

void Tokenizer::encode_spm(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
  bool prefix = spec_.space_prefix == SpacePrefix::kEverySegment ||
                (spec_.space_prefix == SpacePrefix::kFirstSegment && at_start);
  if (prefix && spec_.prefix_skips_leading_space &&
      (text.starts_with(' ') || text.starts_with(kMeta))) {
    prefix = false;
  }
  std::string norm;
  norm.reserve(text.size() + text.size() / 4 + kMeta.size());
  if (prefix) norm += kMeta;
  for (char c : text) {
    if (c == ' ') {
      norm += kMeta;
    } else {
      norm += c;
    }
  }

  BpeMerges::Scratch scratch;
  std::vector<int32_t> symbols;
  auto encode_piece = [&](std::string_view piece) {
    if (ignore_merges_) {
      if (auto it = token_ids_.find(piece); it != token_ids_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (spec_.merges.empty()) {
      merge_by_score(piece, out);
      return;
    }
    // Rank merges (HF): each character is a symbol, or its byte tokens, or one unknown token
    // (consecutive unknown characters fused into one with fuse_unk).
    symbols.clear();
    bool after_unknown = false;
    for (size_t i = 0; i < piece.size();) {
      const std::string_view ch = piece.substr(i, char_length(piece.substr(i)));
      i += ch.size();
      if (const auto it = token_ids_.find(ch); it != token_ids_.end()) {
        symbols.push_back(it->second);
        after_unknown = false;
        continue;
      }
      const bool unknown = append_unknown(ch, symbols);
      if (unknown && after_unknown && spec_.fuse_unk) symbols.pop_back();
      after_unknown = unknown;
    }
    merges_.apply(symbols, scratch);
    out.insert(out.end(), symbols.begin(), symbols.end());
  };
  if (spm_pre_split_) {
    pre_tokenizer_.split(norm, encode_piece);
  } else {
    encode_piece(norm);
  }
}

void Tokenizer::merge_by_score(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  std::vector<Symbol> symbols;
  std::vector<Node> nodes;
  std::vector<Candidate> heap;
  for (size_t i = 0; i < piece.size();) {
    const auto len = static_cast<uint32_t>(char_length(piece.substr(i)));
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back({static_cast<uint32_t>(i), len, index - 1, index + 1, index});
    nodes.push_back({static_cast<uint32_t>(i), len, -1, -1});
    i += len;
  }
  symbols.back().next = -1;

  auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const Symbol& l = symbols[left];
    const Symbol& r = symbols[right];
    const int32_t id = mergeable_token(piece.substr(l.start, l.len + r.len));
    if (id < 0) return;
    heap.push_back({spec_.scores.empty() ? 0.0f : spec_.scores[id], left, right, l.len, r.len});
    std::push_heap(heap.begin(), heap.end(), merges_later);
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), merges_later);
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[c.left];
    // Stale if either side changed since the candidate was queued: a symbol only grows, and one
    // merged into its neighbour has length 0.
    if (left.len != c.left_len || left.next != c.right || symbols[c.right].len != c.right_len) {
      continue;
    }
    Symbol& right = symbols[c.right];
    nodes.push_back({left.start, left.len + right.len, left.node, right.node});
    left.len += right.len;
    left.node = static_cast<int32_t>(nodes.size() - 1);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = c.left;
    right.len = 0;
    push_pair(left.prev);
    push_pair(c.left);
  }

  auto emit = [&](auto& self, int32_t node) -> void {
    const Node& n = nodes[node];
    const std::string_view text = piece.substr(n.start, n.len);
    const int32_t id = mergeable_token(text);
    if (id >= 0 && spec_.token_types[id] == kTokenUnused && n.left >= 0) {
      self(self, n.left);
      self(self, n.right);
    } else if (id >= 0) {
      out.push_back(id);
    } else {
      append_unknown(text, out);
    }
  };
  for (int32_t i = 0; i >= 0; i = symbols[i].next) emit(emit, symbols[i].node);
}

}  // namespace lserve
