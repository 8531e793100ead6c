#include "tokenizer/chat_template.h"

#include <optional>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kStartHeader = "<|start_header_id|>";

// Reads the Jinja string literal whose opening quote is at `open`; returns its value with escapes
// resolved, or nullopt if it is not terminated.
std::optional<std::string> read_string_literal(std::string_view src, size_t open) {
  const char quote = src[open];
  std::string value;
  for (size_t i = open + 1; i < src.size(); ++i) {
    const char c = src[i];
    if (c == quote) return value;
    if (c != '\\' || i + 1 == src.size()) {
      value += c;
      continue;
    }
    const char e = src[++i];
    switch (e) {
      case 'n':
        value += '\n';
        break;
      case 't':
        value += '\t';
        break;
      case 'r':
        value += '\r';
        break;
      case '\\':
      case '\'':
      case '"':
        value += e;
        break;
      default:
        value += '\\';
        value += e;
    }
  }
  return std::nullopt;
}

// Finds a literal '<|im_start|>system\n...<|im_end|>' (SmolLM2, Qwen2.5 write their default system
// prompt this way, guarded by "first message is not system") and returns the prompt text.
std::string find_default_system_prompt(std::string_view src) {
  const std::string header = std::string(kImStart) + "system\n";
  for (size_t at = src.find(kImStart); at != std::string_view::npos;
       at = src.find(kImStart, at + 1)) {
    if (at == 0 || (src[at - 1] != '\'' && src[at - 1] != '"')) continue;
    const auto literal = read_string_literal(src, at - 1);
    if (!literal || !literal->starts_with(header)) continue;
    const size_t end = literal->find(kImEnd, header.size());
    if (end == std::string::npos) continue;  // e.g. '<|im_start|>system\n' + message['content']
    return literal->substr(header.size(), end - header.size());
  }
  return {};
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(kSpace) - begin + 1);
}

std::string printable_start(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 40)) {
    if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void apply_chatml(std::span<const ChatMessage> messages, const std::string& default_system,
                  std::string& out) {
  auto add = [&](std::string_view role, std::string_view content) {
    out.append(kImStart).append(role).append("\n").append(content).append(kImEnd).append("\n");
  };
  // Like the templates themselves: the default is added in front of a first non-system message.
  if (!default_system.empty() && !messages.empty() && messages[0].role != "system") {
    add("system", default_system);
  }
  for (const ChatMessage& m : messages) add(m.role, m.content);
}

// Meta's template trims each message's content; so do we, to produce the same prompt.
void apply_llama3(std::span<const ChatMessage> messages, std::string& out) {
  out += "<|begin_of_text|>";
  for (const ChatMessage& m : messages) {
    out.append(kStartHeader).append(m.role).append("<|end_header_id|>\n\n");
    out.append(trim(m.content)).append("<|eot_id|>");
  }
}

}  // namespace

ChatTemplate ChatTemplate::from_model(const std::string& jinja_source) {
  if (jinja_source.find(kImStart) != std::string::npos) {
    return ChatTemplate(ChatTemplateKind::ChatML, find_default_system_prompt(jinja_source));
  }
  if (jinja_source.find(kStartHeader) != std::string::npos) {
    return ChatTemplate(ChatTemplateKind::Llama3, "");
  }
  if (jinja_source.empty()) {
    fail("the model has no chat template; pass --chat-template chatml|llama3");
  }
  fail("unknown chat template (starts with '{}'); pass --chat-template chatml|llama3",
       printable_start(jinja_source));
}

ChatTemplate ChatTemplate::by_name(std::string_view name) {
  if (name == "chatml") return ChatTemplate(ChatTemplateKind::ChatML, "");
  if (name == "llama3") return ChatTemplate(ChatTemplateKind::Llama3, "");
  fail("unknown chat template name '{}' (known: chatml, llama3)", name);
}

std::string_view ChatTemplate::name() const {
  return kind_ == ChatTemplateKind::ChatML ? "chatml" : "llama3";
}

std::string ChatTemplate::apply(std::span<const ChatMessage> messages,
                                bool add_generation_prompt) const {
  std::string out;
  if (kind_ == ChatTemplateKind::ChatML) {
    apply_chatml(messages, default_system_, out);
    if (add_generation_prompt) out.append(kImStart).append("assistant\n");
  } else {
    apply_llama3(messages, out);
    if (add_generation_prompt) out.append(kStartHeader).append("assistant<|end_header_id|>\n\n");
  }
  return out;
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const ChatTemplate& tmpl,
                                 std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 std::string_view continuation) {
  std::string text = tmpl.apply(messages, add_generation_prompt);
  text += continuation;
  bool bos = tok.add_bos() && tok.bos_id() >= 0;
  if (bos) {
    const std::string& bos_text = tok.token_text(tok.bos_id());
    bos = bos_text.empty() || !text.starts_with(bos_text);
  }
  return tok.encode(text, /*parse_special=*/true, bos);
}

}  // namespace lserve
