// Tokenizer::spec_from_hf_json: reads the BPE subset of HF tokenizer.json: byte-level BPE, and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma).
#include <cctype>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

using nlohmann::json;

constexpr const char* kTok = "tokenizer.json";
constexpr const char* kConfig = "tokenizer_config.json";

// Real tokenizer files nest a handful of levels; a hostile one nesting thousands deep would
// otherwise overflow the stack of the recursive readers below, or grow memory with every level.
constexpr int kMaxJsonDepth = 64;
// Token ids must be about as dense as the tokens named: a vocabulary naming a few tokens with an
// id of 2^31 - 2 would otherwise ask for tens of gigabytes of empty entries.
constexpr int64_t kIdSlack = 1 << 16;

json parse_json(const std::string& text, const char* file) {
  auto depth_limit = [&](int depth, json::parse_event_t, json&) {
    LSERVE_CHECK(depth <= kMaxJsonDepth, "{}: nested deeper than {} levels", file, kMaxJsonDepth);
    return true;
  };
  try {
    return json::parse(text, depth_limit);
  } catch (const json::exception& e) {
    fail("{}: invalid JSON: {}", file, e.what());
  }
}

// A member that may be absent or null.
const json* optional_member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

const json& member(const json& obj, const char* key, const char* where) {
  const json* m = optional_member(obj, key);
  LSERVE_CHECK(m != nullptr, "{}: '{}' is missing", where, key);
  return *m;
}

std::string string_member(const json& obj, const char* key, const char* where) {
  const json& m = member(obj, key, where);
  LSERVE_CHECK(m.is_string(), "{}: '{}' must be a string", where, key);
  return m.get<std::string>();
}

bool bool_member(const json& obj, const char* key, bool fallback) {
  const json* m = optional_member(obj, key);
  return m != nullptr && m->is_boolean() ? m->get<bool>() : fallback;
}

// Escapes a literal for use inside a PCRE2 pattern (HF Split with a String pattern).
std::string regex_quote(std::string_view literal) {
  std::string out;
  for (char c : literal) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && static_cast<unsigned char>(c) < 0x80) {
      out += '\\';
    }
    out += c;
  }
  return out;
}

struct PreTokenizerScan {
  std::vector<std::string> regexes;
  bool byte_level = false;
};

void scan_pre_tokenizer(const json& pt, PreTokenizerScan& scan) {
  const std::string where = fmt::format("{}: pre_tokenizer", kTok);
  const std::string type = string_member(pt, "type", where.c_str());
  if (type == "Sequence") {
    const json& list = member(pt, "pretokenizers", where.c_str());
    LSERVE_CHECK(list.is_array(), "{}: 'pretokenizers' must be an array", where);
    for (const json& item : list) scan_pre_tokenizer(item, scan);
  } else if (type == "ByteLevel") {
    LSERVE_CHECK(!bool_member(pt, "add_prefix_space", false),
                 "{}: ByteLevel add_prefix_space=true is not supported", where);
    scan.byte_level = true;
    if (bool_member(pt, "use_regex", true)) scan.regexes.emplace_back(pre_regex::kGpt2);
  } else if (type == "Split") {
    const std::string behavior = string_member(pt, "behavior", where.c_str());
    LSERVE_CHECK(behavior == "Isolated", "{}: Split behavior '{}' is not supported (only Isolated)",
                 where, behavior);
    LSERVE_CHECK(!bool_member(pt, "invert", false), "{}: Split invert=true is not supported",
                 where);
    const json& pattern = member(pt, "pattern", where.c_str());
    if (const json* re = optional_member(pattern, "Regex"); re != nullptr && re->is_string()) {
      scan.regexes.push_back(re->get<std::string>());
    } else if (const json* s = optional_member(pattern, "String"); s != nullptr && s->is_string()) {
      scan.regexes.push_back(regex_quote(s->get<std::string>()));
    } else {
      fail("{}: Split pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}", where);
    }
  } else if (type == "Digits") {
    scan.regexes.emplace_back(bool_member(pt, "individual_digits", false) ? pre_regex::kEachDigit
                                                                          : pre_regex::kDigitRuns);
  } else {
    fail("{}: type '{}' is not supported (supported: ByteLevel, Split, Digits, Sequence)", where,
         type);
  }
}

// ---- SentencePiece-style tokenizer.json ---------------------------------------------------

constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581

// What the normaliser, pre-tokenizer and decoder of a SentencePiece-style tokenizer.json do.
struct SpmScan {
  bool replaces_spaces = false;          // " " -> "▁", by Replace or Metaspace
  bool prepend = false;                  // normaliser Prepend("▁"): before every segment
  std::optional<SpacePrefix> metaspace;  // pre-tokenizer Metaspace's prepend_scheme
  std::vector<std::string> regexes;      // Metaspace split=true: a piece per "▁"-started word
  bool strip = false;                    // decoder drops one leading space
};

// True if `j` is, or a Sequence holding, a step of `type`.
bool has_step(const json* j, std::string_view type) {
  if (j == nullptr || !j->is_object()) return false;
  if (const json* t = optional_member(*j, "type"); t && t->is_string() && *t == type) return true;
  for (const char* list : {"normalizers", "pretokenizers", "decoders"}) {
    if (const json* l = optional_member(*j, list); l && l->is_array()) {
      for (const json& item : *l) {
        if (has_step(&item, type)) return true;
      }
    }
  }
  return false;
}

// A Replace step's literal pattern, or "" if it is a regex.
std::string replace_pattern(const json& step, const std::string& where) {
  const json& pattern = member(step, "pattern", where.c_str());
  const json* literal = optional_member(pattern, "String");
  LSERVE_CHECK(literal != nullptr && literal->is_string(),
               "{}: only Replace with a String pattern is supported", where);
  return literal->get<std::string>();
}

void scan_spm_normalizer(const json& n, SpmScan& scan) {
  const std::string where = fmt::format("{}: normalizer", kTok);
  const std::string type = string_member(n, "type", where.c_str());
  if (type == "Sequence") {
    const json& list = member(n, "normalizers", where.c_str());
    LSERVE_CHECK(list.is_array(), "{}: 'normalizers' must be an array", where);
    for (const json& item : list) scan_spm_normalizer(item, scan);
  } else if (type == "Prepend") {
    LSERVE_CHECK(string_member(n, "prepend", where.c_str()) == kMeta,
                 "{}: Prepend of anything but \"\u2581\" is not supported", where);
    scan.prepend = true;
  } else if (type == "Replace") {
    LSERVE_CHECK(
        replace_pattern(n, where) == " " && string_member(n, "content", where.c_str()) == kMeta,
        "{}: only Replace \" \" -> \"\u2581\" is supported", where);
    scan.replaces_spaces = true;
  } else {
    fail(
        "{}: type '{}' is not supported with SentencePiece-style BPE (supported: Prepend, Replace, "
        "Sequence)",
        where, type);
  }
}

// prepend_scheme of a Metaspace step (older files say add_prefix_space instead).
SpacePrefix metaspace_scheme(const json& step, const std::string& where) {
  if (const json* scheme = optional_member(step, "prepend_scheme")) {
    LSERVE_CHECK(scheme->is_string(), "{}: Metaspace prepend_scheme must be a string", where);
    const auto s = scheme->get<std::string>();
    if (s == "always") return SpacePrefix::kEverySegment;
    if (s == "first") return SpacePrefix::kFirstSegment;
    if (s == "never") return SpacePrefix::kNone;
    fail("{}: Metaspace prepend_scheme '{}' is not supported", where, s);
  }
  return bool_member(step, "add_prefix_space", true) ? SpacePrefix::kEverySegment
                                                     : SpacePrefix::kNone;
}

void scan_spm_pre_tokenizer(const json& pt, SpmScan& scan) {
  const std::string where = fmt::format("{}: pre_tokenizer", kTok);
  const std::string type = string_member(pt, "type", where.c_str());
  if (type == "Sequence") {
    const json& list = member(pt, "pretokenizers", where.c_str());
    LSERVE_CHECK(list.is_array(), "{}: 'pretokenizers' must be an array", where);
    for (const json& item : list) scan_spm_pre_tokenizer(item, scan);
  } else if (type == "Metaspace") {
    LSERVE_CHECK(string_member(pt, "replacement", where.c_str()) == kMeta,
                 "{}: Metaspace replacement must be \"\u2581\"", where);
    scan.metaspace = metaspace_scheme(pt, where);
    scan.replaces_spaces = true;
    // split=true cuts before every "▁" (the delimiter starts the next piece).
    if (bool_member(pt, "split", true)) scan.regexes.emplace_back("\u2581[^\u2581]*|[^\u2581]+");
  } else if (type == "Split" && scan.replaces_spaces) {
    // Gemma splits on " " after its normaliser has replaced every space: nothing is left to split.
    const json* s = optional_member(member(pt, "pattern", where.c_str()), "String");
    LSERVE_CHECK(s != nullptr && s->is_string() && *s == " ",
                 "{}: Split is supported with SentencePiece-style BPE only on the string \" \"",
                 where);
  } else {
    fail(
        "{}: type '{}' is not supported with SentencePiece-style BPE (supported: Metaspace, "
        "Sequence, Split on \" \" after a Replace normalizer)",
        where, type);
  }
}

void scan_spm_decoder(const json& d, SpmScan& scan) {
  const std::string where = fmt::format("{}: decoder", kTok);
  const std::string type = string_member(d, "type", where.c_str());
  if (type == "Sequence") {
    const json& list = member(d, "decoders", where.c_str());
    LSERVE_CHECK(list.is_array(), "{}: 'decoders' must be an array", where);
    for (const json& item : list) scan_spm_decoder(item, scan);
  } else if (type == "Replace") {
    LSERVE_CHECK(
        replace_pattern(d, where) == kMeta && string_member(d, "content", where.c_str()) == " ",
        "{}: only Replace \"\u2581\" -> \" \" is supported", where);
  } else if (type == "Strip") {
    const json* start = optional_member(d, "start");
    const json* stop = optional_member(d, "stop");
    LSERVE_CHECK(string_member(d, "content", where.c_str()) == " " && start &&
                     start->is_number_integer() && start->get<int64_t>() >= 0 &&
                     start->get<int64_t>() <= 1 && (!stop || *stop == 0),
                 "{}: only Strip of at most one leading space is supported", where);
    scan.strip = start->get<int64_t>() == 1;
  } else if (type == "Metaspace") {
    scan.strip = metaspace_scheme(d, where) != SpacePrefix::kNone;
  } else if (type != "ByteFallback" && type != "Fuse") {
    fail(
        "{}: type '{}' is not supported with SentencePiece-style BPE (supported: Replace, "
        "ByteFallback, Fuse, Strip, Metaspace, Sequence)",
        where, type);
  }
}

void read_spm_parts(const json& tok, const json& model, TokenizerSpec& spec) {
  SpmScan scan;
  if (const json* n = optional_member(tok, "normalizer")) scan_spm_normalizer(*n, scan);
  if (const json* pt = optional_member(tok, "pre_tokenizer")) scan_spm_pre_tokenizer(*pt, scan);
  if (const json* d = optional_member(tok, "decoder")) scan_spm_decoder(*d, scan);
  LSERVE_CHECK(scan.replaces_spaces,
               "{}: SentencePiece-style BPE needs spaces replaced by \"\u2581\" (normalizer "
               "Replace or pre_tokenizer Metaspace)",
               kTok);
  LSERVE_CHECK(!(scan.prepend && scan.metaspace),
               "{}: both a Prepend normalizer and a Metaspace "
               "pre_tokenizer are not supported",
               kTok);
  spec.kind = TokenizerKind::kSentencePiece;
  if (scan.prepend) {
    spec.space_prefix = SpacePrefix::kEverySegment;
  } else {
    spec.space_prefix = scan.metaspace.value_or(SpacePrefix::kNone);
    spec.prefix_skips_leading_space = scan.metaspace.has_value();
  }
  spec.pre_regexes = scan.regexes;
  spec.decode_strips_space = scan.strip;
  spec.fuse_unk = bool_member(model, "fuse_unk", false);
  // Byte-fallback tokens are ordinary vocab entries in tokenizer.json; give them their GGUF type
  // so that they decode to their byte and are never spelled by text.
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    const std::string& t = spec.tokens[i];
    if (spec.token_types[i] == kTokenNormal && t.size() == 6 && t.starts_with("<0x") &&
        t.back() == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
        std::isxdigit(static_cast<unsigned char>(t[4]))) {
      spec.token_types[i] = kTokenByte;
    }
  }
}

// Content of a token field in tokenizer_config.json: "text", {"content": "text"} or null.
std::optional<std::string> config_token(const json& config, const char* key) {
  const json* m = optional_member(config, key);
  if (m == nullptr) return std::nullopt;
  if (m->is_string()) return m->get<std::string>();
  if (const json* c = optional_member(*m, "content"); c != nullptr && c->is_string()) {
    return c->get<std::string>();
  }
  fail("{}: '{}' must be a string or an object with 'content'", kConfig, key);
}

// The special token that the post-processor puts in front of a single sequence, e.g. Llama-3's
// <|begin_of_text|>; that is how tokenizer.json says "add bos".
std::optional<std::string> post_processor_prefix(const json& tok) {
  const json* pp = optional_member(tok, "post_processor");
  if (pp == nullptr) return std::nullopt;
  if (const json* list = optional_member(*pp, "processors"); list != nullptr && list->is_array()) {
    for (const json& p : *list) {
      if (auto prefix = post_processor_prefix(json{{"post_processor", p}})) return prefix;
    }
    return std::nullopt;
  }
  const json* single = optional_member(*pp, "single");
  if (single == nullptr || !single->is_array() || single->empty()) return std::nullopt;
  const json* first = optional_member((*single)[0], "SpecialToken");
  if (first == nullptr) return std::nullopt;
  const json* id = optional_member(*first, "id");
  return id != nullptr && id->is_string() ? std::optional(id->get<std::string>()) : std::nullopt;
}

void read_vocab(const json& model, const json& tok, TokenizerSpec& spec) {
  const std::string where = fmt::format("{}: model", kTok);
  const json& vocab = member(model, "vocab", where.c_str());
  LSERVE_CHECK(vocab.is_object(), "{}: 'vocab' must be an object of token -> id", where);
  const json* added = optional_member(tok, "added_tokens");
  LSERVE_CHECK(added == nullptr || added->is_array(), "{}: 'added_tokens' must be an array", kTok);

  int64_t max_id = -1;
  for (const auto& [text, id] : vocab.items()) {
    LSERVE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
                 "{}: vocab id of '{}' must be a non-negative integer", where, text);
    max_id = std::max(max_id, id.get<int64_t>());
  }
  if (added != nullptr) {
    for (const json& t : *added) {
      const json& id = member(t, "id", "tokenizer.json: added_tokens entry");
      LSERVE_CHECK(
          id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < INT32_MAX,
          "{}: added_tokens id must be a non-negative integer", kTok);
      max_id = std::max(max_id, id.get<int64_t>());
    }
  }
  LSERVE_CHECK(max_id >= 0, "{}: the vocabulary is empty", where);
  const auto named = static_cast<int64_t>(vocab.size() + (added != nullptr ? added->size() : 0));
  LSERVE_CHECK(max_id < 2 * named + kIdSlack,
               "{}: the largest token id {} is far beyond the {} tokens named (ids must be "
               "nearly dense)",
               where, max_id, named);

  // Ids that nothing names (padding up to a round size) stay as empty, unused tokens.
  spec.tokens.assign(max_id + 1, std::string());
  spec.token_types.assign(max_id + 1, kTokenUnused);
  for (const auto& [text, id] : vocab.items()) {
    const auto i = id.get<int32_t>();
    LSERVE_CHECK(spec.token_types[i] == kTokenUnused, "{}: id {} is used by both '{}' and '{}'",
                 where, i, spec.tokens[i], text);
    spec.tokens[i] = text;
    spec.token_types[i] = kTokenNormal;
  }
  if (added == nullptr) return;
  for (const json& t : *added) {
    const auto i = t["id"].get<int32_t>();
    const std::string content = string_member(t, "content", "tokenizer.json: added_tokens entry");
    LSERVE_CHECK(spec.token_types[i] == kTokenUnused || spec.tokens[i] == content,
                 "{}: added token '{}' has id {}, which the vocab gives to '{}'", kTok, content, i,
                 spec.tokens[i]);
    if (const json* other = optional_member(vocab, content.c_str())) {
      LSERVE_CHECK(other->get<int32_t>() == i, "{}: added token '{}' has id {} but vocab id {}",
                   kTok, content, i, other->get<int32_t>());
    }
    spec.tokens[i] = content;
    spec.token_types[i] = bool_member(t, "special", false) ? kTokenControl : kTokenUserDefined;
  }
}

void read_merges(const json& model, TokenizerSpec& spec) {
  const std::string where = fmt::format("{}: model.merges", kTok);
  const json& merges = member(model, "merges", "tokenizer.json: model");
  LSERVE_CHECK(merges.is_array(), "{} must be an array", where);
  spec.merges.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      spec.merges.push_back(m.get<std::string>());
      continue;
    }
    LSERVE_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                 "{}: entry #{} must be \"left right\" or [\"left\", \"right\"]", where,
                 spec.merges.size());
    const auto left = m[0].get<std::string>();
    const auto right = m[1].get<std::string>();
    LSERVE_CHECK(left.find(' ') == std::string::npos && right.find(' ') == std::string::npos,
                 "{}: entry #{} has a token containing a space, which BPE vocabularies never have",
                 where, spec.merges.size());
    spec.merges.push_back(left + " " + right);
  }
}

int32_t token_id(const TokenizerSpec& spec, const std::string& text, const char* file,
                 const char* what) {
  for (size_t i = 0; i < spec.tokens.size(); ++i) {
    if (spec.tokens[i] == text && spec.token_types[i] != kTokenUnused)
      return static_cast<int32_t>(i);
  }
  fail("{}: {} '{}' is not in the vocabulary", file, what, text);
}

void read_config(const std::string& text, const json& tok, TokenizerSpec& spec) {
  json config = json::object();
  if (!text.empty()) config = parse_json(text, kConfig);
  LSERVE_CHECK(config.is_object(), "{}: top level must be an object", kConfig);

  if (const json* tmpl = optional_member(config, "chat_template")) {
    if (tmpl->is_string()) {
      spec.chat_template = tmpl->get<std::string>();
    } else if (tmpl->is_array()) {
      // Named templates: take "default" (the others are for tool use, RAG...).
      for (const json& t : *tmpl) {
        if (const json* name = optional_member(t, "name"); name && *name == "default") {
          spec.chat_template = string_member(t, "template", "tokenizer_config.json: chat_template");
        }
      }
      LSERVE_CHECK(!spec.chat_template.empty(), "{}: chat_template list has no 'default' entry",
                   kConfig);
    } else {
      fail("{}: chat_template must be a string or a list of {{name, template}}", kConfig);
    }
  }

  const auto prefix = post_processor_prefix(tok);
  std::optional<std::string> bos = config_token(config, "bos_token");
  if (!bos) bos = prefix;
  if (bos) spec.bos_id = token_id(spec, *bos, kConfig, "bos_token");
  if (auto eos = config_token(config, "eos_token"))
    spec.eos_id = token_id(spec, *eos, kConfig, "eos_token");
  if (auto pad = config_token(config, "pad_token"))
    spec.pad_id = token_id(spec, *pad, kConfig, "pad_token");
  if (auto unk = config_token(config, "unk_token"))
    spec.unk_id = token_id(spec, *unk, kConfig, "unk_token");

  if (const json* add = optional_member(config, "add_bos_token")) {
    LSERVE_CHECK(add->is_boolean(), "{}: add_bos_token must be true or false", kConfig);
    spec.add_bos = add->get<bool>();
  } else {
    spec.add_bos = bos && prefix && *bos == *prefix;
  }
  LSERVE_CHECK(!spec.add_bos || spec.bos_id >= 0, "{}: add_bos_token is true but no bos_token",
               kConfig);
}

}  // namespace

TokenizerSpec Tokenizer::spec_from_hf_json(const std::string& tokenizer_json_text,
                                           const std::string& tokenizer_config_json_text) {
  const json tok = parse_json(tokenizer_json_text, kTok);
  LSERVE_CHECK(tok.is_object(), "{}: top level must be an object", kTok);
  const json& model = member(tok, "model", kTok);
  const std::string type =
      optional_member(model, "type") ? string_member(model, "type", kTok) : "BPE";
  LSERVE_CHECK(type == "BPE", "{}: model.type '{}' is not supported (only BPE)", kTok, type);
  const json* dropout = optional_member(model, "dropout");
  LSERVE_CHECK(!dropout || (dropout->is_number() && dropout->get<double>() == 0.0),
               "{}: model.dropout is not supported", kTok);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const json* m = optional_member(model, key);
    LSERVE_CHECK(!m || (m->is_string() && m->get<std::string>().empty()),
                 "{}: model.{} is not supported (byte-level BPE only)", kTok, key);
  }
  // byte_fallback, or spaces written as "▁", mark the SentencePiece style (Llama 2, Mistral,
  // Gemma); everything else must be byte-level.
  const json* normalizer = optional_member(tok, "normalizer");
  const json* pre_tokenizer = optional_member(tok, "pre_tokenizer");
  const bool spm = bool_member(model, "byte_fallback", false) ||
                   has_step(pre_tokenizer, "Metaspace") || has_step(normalizer, "Prepend") ||
                   has_step(normalizer, "Replace");
  if (const json* norm = spm ? nullptr : normalizer) {
    // NFC is what Qwen2 declares; like llama.cpp we do not normalise (inputs are usually NFC).
    const std::string ntype = string_member(*norm, "type", "tokenizer.json: normalizer");
    LSERVE_CHECK(ntype == "NFC", "{}: normalizer '{}' is not supported", kTok, ntype);
  }

  TokenizerSpec spec;
  spec.pre = "tokenizer.json";
  read_vocab(model, tok, spec);
  read_merges(model, spec);
  spec.ignore_merges = bool_member(model, "ignore_merges", false);
  if (const json* unk = optional_member(model, "unk_token")) {
    LSERVE_CHECK(unk->is_string(), "{}: model.unk_token must be a string", kTok);
    spec.unk_id = token_id(spec, unk->get<std::string>(), kTok, "model.unk_token");
  }

  if (spm) {
    read_spm_parts(tok, model, spec);
    read_config(tokenizer_config_json_text, tok, spec);
    return spec;
  }
  const json* pt = pre_tokenizer;
  LSERVE_CHECK(pt != nullptr, "{}: pre_tokenizer is null; only byte-level BPE is supported", kTok);
  PreTokenizerScan scan;
  scan_pre_tokenizer(*pt, scan);
  LSERVE_CHECK(scan.byte_level,
               "{}: pre_tokenizer has no ByteLevel step; only byte-level BPE is "
               "supported",
               kTok);
  // ByteLevel(use_regex=false) alone leaves the whole text as one pre-token.
  spec.pre_regexes = scan.regexes.empty() ? std::vector<std::string>{R"([\s\S]+)"} : scan.regexes;

  read_config(tokenizer_config_json_text, tok, spec);
  return spec;
}

}  // namespace lserve
