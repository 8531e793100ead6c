// Chat template recognition and rendering. Expected prompts were rendered from the original Jinja
// templates with jinja2.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/chat_template.h"

namespace lserve {
namespace {

// SmolLM2-Instruct's template as stored in its GGUF file (the "\n" inside the Jinja string literals
// are real newlines there).
const std::string kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}";

// Meta-Llama-3-Instruct's template.
const std::string kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

TEST(ChatTemplate, ChatMLWithDefaultSystemPrompt) {
  const ChatTemplate t = ChatTemplate::from_model(kSmolLM2);
  EXPECT_EQ(t.kind(), ChatTemplateKind::ChatML);
  EXPECT_EQ(t.name(), "chatml");
  EXPECT_EQ(t.default_system_prompt(),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::vector<ChatMessage> user = {{"user", "Hi there"}};
  EXPECT_EQ(t.apply(user, true),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
  const std::vector<ChatMessage> with_system = {
      {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
  EXPECT_EQ(t.apply(with_system, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n");
  EXPECT_EQ(t.apply({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplate, DefaultSystemPromptFromEscapedLiteral) {
  // Qwen2.5-style: Jinja escapes (backslash-n, \') inside the literal; an earlier
  // '<|im_start|>system\n' literal without <|im_end|> is not a default prompt.
  const std::string src =
      R"({%- if tools %}{{- '<|im_start|>system\n' }}{{- messages[0]['content'] }})"
      R"({%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + )"
      R"(messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou)"
      R"( are Qwen, Alibaba\'s assistant.<|im_end|>\n' }}{%- endif %}{%- endif %})";
  const ChatTemplate t = ChatTemplate::from_model(src);
  EXPECT_EQ(t.default_system_prompt(), "You are Qwen, Alibaba's assistant.");

  const ChatTemplate plain = ChatTemplate::from_model(
      "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>'}}"
      "{% endfor %}");
  EXPECT_EQ(plain.kind(), ChatTemplateKind::ChatML);
  EXPECT_EQ(plain.default_system_prompt(), "");
  const std::vector<ChatMessage> user = {{"user", "x"}};
  EXPECT_EQ(plain.apply(user, false), "<|im_start|>user\nx<|im_end|>\n");
}

TEST(ChatTemplate, Llama3) {
  const ChatTemplate t = ChatTemplate::from_model(kLlama3);
  EXPECT_EQ(t.kind(), ChatTemplateKind::Llama3);
  EXPECT_EQ(t.name(), "llama3");
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "  Hi\n"}};
  EXPECT_EQ(t.apply(messages, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ByName) {
  EXPECT_EQ(ChatTemplate::by_name("chatml").kind(), ChatTemplateKind::ChatML);
  EXPECT_EQ(ChatTemplate::by_name("chatml").default_system_prompt(), "");
  EXPECT_EQ(ChatTemplate::by_name("llama3").kind(), ChatTemplateKind::Llama3);
  try {
    ChatTemplate::by_name("vicuna");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown chat template name 'vicuna' (known: chatml, llama3)");
  }
}

TEST(ChatTemplate, UnknownTemplateIsAnError) {
  try {
    ChatTemplate::from_model("{% for message in messages %}\n{{ '[INST] ' + message['content'] }}");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(
        e.what(),
        "unknown chat template (starts with '{% for message in messages %}\\n{{ '[INST]'); "
        "pass --chat-template chatml|llama3");
  }
  EXPECT_THROW(ChatTemplate::from_model(""), Error);
}

}  // namespace
}  // namespace lserve
