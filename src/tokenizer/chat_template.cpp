#include "tokenizer/chat_template.h"

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "tokenizer/jinja/json_value.h"
#include "tokenizer/jinja/template.h"
#include "tokenizer/jinja/text.h"
#include "tokenizer/tokenizer.h"

namespace lserve {
namespace {

// lserve's own templates, for models that carry none. Each starts with kTextMacro (builtin()):
// content may be a string, a list of text parts as OpenAI's API allows, or none (an assistant turn
// that only calls tools).
constexpr std::string_view kTextMacro =
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content is iterable -%}"
    "{%- for part in content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}";

constexpr std::string_view kChatML =
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message.role + '\\n' + text(message.content) + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}";

// Meta's Llama 3 layout: every message trimmed, <|begin_of_text|> first.
constexpr std::string_view kLlama3 =
    "{{- '<|begin_of_text|>' -}}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + "
    "text(message.content) | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif -%}";

// A builtin template's source: kTextMacro, then `body`.
std::string builtin(std::string_view body) {
  std::string source(kTextMacro);
  source += body;
  return source;
}

// Templates longer than this are refused (the longest published ones are ~20 KB).
constexpr uintmax_t kMaxTemplateBytes = 1 << 20;

std::string read_template_file(const std::string& path) {
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  LSERVE_CHECK(!ec, "chat template file {}: {}", path, ec.message());
  LSERVE_CHECK(size <= kMaxTemplateBytes, "chat template file {} is larger than {} bytes", path,
               kMaxTemplateBytes);
  std::ifstream in(path, std::ios::binary);
  LSERVE_CHECK(in, "cannot read chat template file {}", path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

jinja::Value strftime_now(jinja::CallArgs& a) {
  LSERVE_CHECK(a.positional.size() == 1 && a.positional[0].is_string(),
               "strftime_now() takes one format string");
  const std::string& format = a.positional[0].str();
  LSERVE_CHECK(format.size() <= 256, "strftime_now(): the format is longer than 256 bytes");
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  std::string out(format.size() * 8 + 64, '\0');
  out.resize(std::strftime(out.data(), out.size(), format.c_str(), &local));
  return jinja::Value::string(std::move(out));
}

jinja::Value raise_exception(jinja::CallArgs& a) {
  const std::string message =
      a.positional.empty() ? "(no message)" : jinja::to_str(a.positional[0]);
  throw jinja::RaisedError(message);
}

jinja::Value message_value(const ChatMessage& m) {
  auto d = jinja::make_dict();
  d->set("role", jinja::Value::string(m.role));
  d->set("content", jinja::Value::string(m.content));
  if (m.extra.is_object()) {
    for (const auto& [k, v] : m.extra.items()) d->set(k, jinja::from_json(v));
  }
  return jinja::Value::dict(d);
}

std::string render(const jinja::Template& tmpl, const std::string& origin,
                   std::span<const ChatMessage> messages, bool add_generation_prompt,
                   const ChatOptions& options, const std::string& bos, const std::string& eos) {
  jinja::Dict vars;
  try {
    // Hugging Face's apply_chat_template: extra kwargs first, its own names win over them.
    if (options.kwargs.is_object()) {
      for (const auto& [k, v] : options.kwargs.items()) vars.set(k, jinja::from_json(v));
    }
    jinja::List list;
    list.reserve(messages.size());
    for (const ChatMessage& m : messages) list.push_back(message_value(m));
    vars.set("messages", jinja::Value::list(std::move(list)));
    vars.set("tools", jinja::from_json(options.tools));
    vars.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
    vars.set("bos_token", jinja::Value::string(bos));
    vars.set("eos_token", jinja::Value::string(eos));
    vars.set("raise_exception", jinja::Value::function(std::make_shared<const jinja::Function>(
                                    jinja::Function{"raise_exception", raise_exception})));
    vars.set("strftime_now", jinja::Value::function(std::make_shared<const jinja::Function>(
                                 jinja::Function{"strftime_now", strftime_now})));
    return tmpl.render(vars);
  } catch (const jinja::RaisedError& e) {
    fail("the chat template refused the conversation: {}", e.what());
  } catch (const Error& e) {
    fail("chat template ({}): {}", origin, e.what());
  }
}

// The final message continue_final_message continues, with its content stripped (Python's
// str.strip, as the template's `trim` strips).
std::string_view final_message_text(std::span<const ChatMessage> messages) {
  LSERVE_CHECK(!messages.empty(), "continue_final_message: there are no messages");
  const ChatMessage& last = messages.back();
  LSERVE_CHECK(last.role == "assistant",
               "continue_final_message: the final message is from '{}', not the assistant",
               last.role);
  const std::string_view stripped = jinja::text::strip(last.content);
  LSERVE_CHECK(!stripped.empty(),
               "continue_final_message: the final message has no text to continue (use "
               "add_generation_prompt to start a new reply)");
  return stripped;
}

// continue_final_message as transformers' apply_chat_template does it: the rendered text is cut
// right after the last place the final message's content (stripped) appears, keeping the
// content's trailing whitespace where the template kept it.
std::string cut_after_final_message(std::string text, const std::string& origin,
                                    const ChatMessage& last, std::string_view stripped) {
  const size_t at = text.rfind(stripped);
  LSERVE_CHECK(at != std::string::npos,
               "continue_final_message: the chat template ({}) does not write the final "
               "message's content as given, so the prompt cannot end inside it",
               origin);
  const std::string_view lstripped = jinja::text::strip(last.content, {}, true, false);
  if (std::string_view(text).substr(at, lstripped.size()) == lstripped) {
    text.resize(at + lstripped.size());
  } else {
    text.resize(at + stripped.size());
  }
  return text;
}

}  // namespace

ChatTemplate ChatTemplate::from_source(const std::string& jinja_source, std::string origin) {
  std::shared_ptr<const jinja::Template> tmpl;
  try {
    tmpl = std::make_shared<const jinja::Template>(jinja_source);
  } catch (const Error& e) {
    fail("chat template ({}) does not parse: {}", origin, e.what());
  }
  return ChatTemplate(std::move(tmpl), std::move(origin));
}

ChatTemplate ChatTemplate::from_model(const std::string& jinja_source) {
  LSERVE_CHECK(!jinja_source.empty(),
               "the model has no chat template; pass --chat-template chatml|llama3|FILE");
  return from_source(jinja_source, "the model's");
}

ChatTemplate ChatTemplate::by_name(std::string_view name) {
  if (name == "chatml") return from_source(builtin(kChatML), "chatml");
  if (name == "llama3") return from_source(builtin(kLlama3), "llama3");
  fail("unknown chat template name '{}' (known: chatml, llama3)", name);
}

ChatTemplate ChatTemplate::resolve(std::string_view choice, const Tokenizer& tok) {
  ChatTemplate t = [&] {
    if (choice.empty()) return from_model(tok.chat_template_source());
    if (choice == "chatml" || choice == "llama3") return by_name(choice);
    const std::string value(choice);
    std::error_code ec;
    if (std::filesystem::is_regular_file(value, ec)) {
      return from_source(read_template_file(value), value);
    }
    if (choice.find("{{") != std::string_view::npos ||
        choice.find("{%") != std::string_view::npos) {
      return from_source(value, "--chat-template text");
    }
    fail(
        "--chat-template '{}' is not a builtin name (chatml, llama3), nor a file, nor template "
        "text (which contains '{{{{' or '{{%')",
        choice);
  }();
  const auto text = [&](int32_t id) { return id >= 0 ? tok.token_text(id) : std::string(); };
  t.set_special_tokens(text(tok.bos_id()), text(tok.eos_id()));
  return t;
}

void ChatTemplate::set_special_tokens(std::string bos, std::string eos) {
  bos_ = std::move(bos);
  eos_ = std::move(eos);
}

std::string ChatTemplate::apply(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                const ChatOptions& options) const {
  if (!options.continue_final_message) {
    return render(*tmpl_, origin_, messages, add_generation_prompt, options, bos_, eos_);
  }
  LSERVE_CHECK(!add_generation_prompt,
               "continue_final_message and add_generation_prompt cannot both be set");
  const std::string_view stripped = final_message_text(messages);
  return cut_after_final_message(render(*tmpl_, origin_, messages, false, options, bos_, eos_),
                                 origin_, messages.back(), stripped);
}

std::vector<int32_t> encode_chat(const Tokenizer& tok, const ChatTemplate& tmpl,
                                 std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 std::string_view continuation, const ChatOptions& options) {
  std::string text = tmpl.apply(messages, add_generation_prompt, options);
  text += continuation;
  bool bos = tok.add_bos() && tok.bos_id() >= 0;
  if (bos) {
    const std::string& bos_text = tok.token_text(tok.bos_id());
    bos = bos_text.empty() || !text.starts_with(bos_text);
  }
  return tok.encode(text, /*parse_special=*/true, bos);
}

}  // namespace lserve
