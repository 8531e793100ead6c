// Tokenizer::spec_from_hf_json: reads the byte-level BPE subset of HF tokenizer.json.
#include <nlohmann/json.hpp>

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
                 "{}: entry #{} has a token containing a space, which byte-level BPE never has",
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
  LSERVE_CHECK(!bool_member(model, "byte_fallback", false),
               "{}: model.byte_fallback is not supported (byte-level BPE only)", kTok);
  if (const json* norm = optional_member(tok, "normalizer")) {
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

  const json* pt = optional_member(tok, "pre_tokenizer");
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
