// Chat prompt formatting for the template families lserve knows. A model's Jinja template is not
// executed: it is recognised by its markers, and the one model-specific detail that matters in
// practice (a built-in default system prompt) is read out of its string literals.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lserve {

class Tokenizer;

enum class ChatTemplateKind { ChatML, Llama3 };

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // Recognises the family from the model's Jinja source; Error if it is none that lserve knows.
  static ChatTemplate from_model(const std::string& jinja_source);
  // "chatml" or "llama3"; anything else is an Error listing the known names.
  static ChatTemplate by_name(std::string_view name);

  // The prompt text, with special tokens written out (encode_chat below encodes it; the Llama-3
  // form starts with <|begin_of_text|> itself). Message content is inserted
  // verbatim, so callers that take content from untrusted users should be aware that special
  // tokens inside it would be parsed too.
  std::string apply(std::span<const ChatMessage> messages, bool add_generation_prompt) const;

  ChatTemplateKind kind() const { return kind_; }
  std::string_view name() const;
  // System prompt inserted when the conversation does not start with one; empty if none.
  const std::string& default_system_prompt() const { return default_system_; }

 private:
  ChatTemplate(ChatTemplateKind kind, std::string default_system)
      : kind_(kind), default_system_(std::move(default_system)) {}

  ChatTemplateKind kind_;
  std::string default_system_;
};

// The ids of `messages` rendered by `tmpl`, followed by `continuation` (text the reply is to start
// with), special tokens parsed. BOS goes first when the tokenizer asks for one and the rendered
// text does not begin with it already (Llama 3's template writes <|begin_of_text|> itself). Every
// entry point (`generate --chat`, the server, `eval`) encodes conversations here, so they agree
// token for token and none puts BOS twice.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const ChatTemplate& tmpl,
                                 std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 std::string_view continuation = {});

}  // namespace lserve
