// Chat prompts rendered by the model's own Jinja chat template, run by lserve's Jinja-subset
// interpreter (tokenizer/jinja/) configured as Hugging Face transformers configures jinja2, so
// that a conversation becomes the same text it becomes under transformers and vLLM.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lserve {

class Tokenizer;
namespace jinja {
class Template;
}

struct ChatMessage {
  ChatMessage() = default;
  ChatMessage(std::string role, std::string content, nlohmann::json extra = nullptr)
      : role(std::move(role)), content(std::move(content)), extra(std::move(extra)) {}

  std::string role;
  std::string content;
  // Further keys of the message, given to the template as they are: tool_calls, name,
  // tool_call_id; a "content" here (a list of {type, text} parts, or null) replaces `content`.
  nlohmann::json extra;
};

// What a conversation gives the template beside its messages.
struct ChatOptions {
  nlohmann::json tools;   // a list of tool definitions; null: `tools` is none
  nlohmann::json kwargs;  // an object of further template variables (e.g. date_string)
  // The text ends right after the final message's content (no end-of-turn), for the model to
  // continue it, as transformers' and vLLM's continue_final_message: the final message must be
  // the assistant's, with text, and add_generation_prompt false.
  bool continue_final_message = false;
};

class ChatTemplate {
 public:
  // The template a model is served with. `choice` (--chat-template) is a builtin name (chatml,
  // llama3), a file holding a template, or template text itself (it contains "{{" or "{%");
  // empty: the model's own template. Error if there is none or it does not parse.
  static ChatTemplate resolve(std::string_view choice, const Tokenizer& tok);
  // Parses the model's template source; Error if it is empty or does not parse.
  static ChatTemplate from_model(const std::string& jinja_source);
  // `origin` names the template in error messages ("the model's", a file name).
  static ChatTemplate from_source(const std::string& jinja_source, std::string origin);
  // "chatml" or "llama3" (lserve's own templates, for models without one); anything else is an
  // Error listing the known names.
  static ChatTemplate by_name(std::string_view name);

  // bos_token and eos_token as the template sees them; resolve() takes them from the tokenizer.
  void set_special_tokens(std::string bos, std::string eos);

  // The prompt text, with special tokens written out. Message content is inserted verbatim, so
  // callers that take content from untrusted users should be aware that special tokens inside
  // it would be parsed too. Error naming the template for anything the template refuses
  // (raise_exception) or fails on, and for a continue_final_message it cannot honour.
  std::string apply(std::span<const ChatMessage> messages, bool add_generation_prompt,
                    const ChatOptions& options = {}) const;

  const std::string& origin() const { return origin_; }

 private:
  ChatTemplate(std::shared_ptr<const jinja::Template> tmpl, std::string origin)
      : tmpl_(std::move(tmpl)), origin_(std::move(origin)) {}

  std::shared_ptr<const jinja::Template> tmpl_;
  std::string origin_;
  std::string bos_, eos_;
};

// The ids of `messages` rendered by `tmpl`, followed by `continuation` (text the reply is to start
// with), special tokens parsed. BOS goes first when the tokenizer asks for one and the rendered
// text does not begin with it already (Llama 3's template writes <|begin_of_text|> itself). Every
// entry point (`generate --chat`, the server, `eval`) encodes conversations here, so they agree
// token for token and none puts BOS twice.
std::vector<int32_t> encode_chat(const Tokenizer& tok, const ChatTemplate& tmpl,
                                 std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 std::string_view continuation = {},
                                 const ChatOptions& options = {});

}  // namespace lserve
