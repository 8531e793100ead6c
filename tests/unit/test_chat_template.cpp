// Chat templates executed by lserve's Jinja interpreter. Expected prompts were rendered from the
// same templates with jinja2 configured as Hugging Face transformers configures it; the template
// families are compared byte for byte in test_jinja.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

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

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ChatTemplate, ChatMLWithDefaultSystemPrompt) {
  const ChatTemplate t = ChatTemplate::from_model(kSmolLM2);
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

TEST(ChatTemplate, EscapesInLiteralsAndToolsBranch) {
  // Qwen2.5-style: Jinja escapes (backslash-n, \') inside the literal, and a branch on `tools`.
  const std::string src =
      R"({%- if tools %}{{- '<|im_start|>system\n' }}{{- tools[0].name }})"
      R"({%- else %}{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + )"
      R"(messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou)"
      R"( are Qwen, Alibaba\'s assistant.<|im_end|>\n' }}{%- endif %}{%- endif %})";
  const ChatTemplate t = ChatTemplate::from_model(src);
  const std::vector<ChatMessage> user = {{"user", "x"}};
  EXPECT_EQ(t.apply(user, false),
            "<|im_start|>system\nYou are Qwen, Alibaba's assistant.<|im_end|>\n");
  const ChatOptions tools{nlohmann::json::array({{{"name", "get_weather"}}}), nullptr};
  EXPECT_EQ(t.apply(user, false, tools), "<|im_start|>system\nget_weather");
}

TEST(ChatTemplate, Llama3) {
  ChatTemplate t = ChatTemplate::from_model(kLlama3);
  t.set_special_tokens("<|begin_of_text|>", "<|eot_id|>");
  const std::vector<ChatMessage> messages = {{"system", "Be brief."}, {"user", "  Hi\n"}};
  const std::string expected =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n";
  EXPECT_EQ(t.apply(messages, true), expected);
  // lserve's builtin writes the same text.
  EXPECT_EQ(ChatTemplate::by_name("llama3").apply(messages, true), expected);
}

TEST(ChatTemplate, BuiltinsTakeContentPartsAndNullContent) {
  std::vector<ChatMessage> messages = {{"user", ""}, {"assistant", ""}};
  const nlohmann::json parts = nlohmann::json::parse(
      R"([{"type": "text", "text": "Hello "}, {"type": "image_url", "image_url": "x"},
          {"type": "text", "text": "world"}])");
  messages[0].extra = {{"content", parts}};
  messages[1].extra = {{"content", nullptr}, {"tool_calls", nlohmann::json::array()}};
  EXPECT_EQ(ChatTemplate::by_name("chatml").apply(messages, true),
            "<|im_start|>user\nHello world<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, ExtraKwargsAndSpecialTokens) {
  ChatTemplate t = ChatTemplate::from_source(
      "{{ bos_token }}{{ date_string | default('none') }}{{ eos_token }}", "test");
  t.set_special_tokens("<s>", "</s>");
  EXPECT_EQ(t.apply({}, false), "<s>none</s>");
  EXPECT_EQ(t.apply({}, false, {nullptr, {{"date_string", "26 Jul 2024"}}}), "<s>26 Jul 2024</s>");
}

TEST(ChatTemplate, ErrorsNameTheTemplateAndItsMessage) {
  const ChatTemplate strict = ChatTemplate::from_source(
      "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
      "{% endif %}{{ m.content }}{% endfor %}",
      "the model's");
  const std::vector<ChatMessage> bad = {{"user", "a"}, {"user", "b"}};
  EXPECT_EQ(error_of([&] { strict.apply(bad, true); }),
            "the chat template refused the conversation: Conversation roles must alternate "
            "user/assistant/user/assistant/...");
  EXPECT_EQ(error_of([&] { ChatTemplate::from_source("{% for x in %}", "f.jinja"); }),
            "chat template (f.jinja) does not parse: line 1: unexpected '%}'");
  EXPECT_EQ(error_of([&] { ChatTemplate::from_source("{{ x.y }}", "t").apply({}, true); }),
            "chat template (t): line 1: 'x' is undefined");
  EXPECT_EQ(error_of([] { ChatTemplate::from_model(""); }),
            "the model has no chat template; pass --chat-template chatml|llama3|FILE");
  EXPECT_EQ(error_of([] { ChatTemplate::by_name("vicuna"); }),
            "unknown chat template name 'vicuna' (known: chatml, llama3)");
}

// continue_final_message (vLLM's, done as transformers does it): the text ends right after the
// final assistant message's content, with no end of turn, for the model to continue.
TEST(ChatTemplate, ContinueFinalMessageEndsInsideTheLastMessage) {
  const ChatOptions cont{nullptr, nullptr, true};
  const std::vector<ChatMessage> m = {{"user", "Hi"}, {"assistant", "Hello, I am"}};
  // The model's own Jinja template (SmolLM2's, with its default system prompt).
  EXPECT_EQ(ChatTemplate::from_model(kSmolLM2).apply(m, false, cont),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, I am");
  // The builtins.
  const ChatTemplate chatml = ChatTemplate::by_name("chatml");
  EXPECT_EQ(chatml.apply(m, false, cont),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, I am");
  EXPECT_EQ(ChatTemplate::by_name("llama3").apply(m, false, cont),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello, I am");
  // Surrounding whitespace: kept where the template keeps it (chatml), dropped where it trims
  // (llama3), as transformers does.
  const std::vector<ChatMessage> spaced = {{"user", "Hi"}, {"assistant", " Hello, I am "}};
  EXPECT_EQ(chatml.apply(spaced, false, cont),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n Hello, I am ");
  ChatTemplate llama3 = ChatTemplate::from_model(kLlama3);
  llama3.set_special_tokens("<|begin_of_text|>", "<|eot_id|>");
  EXPECT_EQ(llama3.apply(spaced, false, cont),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello, I am");
  // Content that also appears earlier: the cut is after its last appearance.
  const std::vector<ChatMessage> echo = {{"user", "yes"}, {"assistant", "yes"}};
  EXPECT_EQ(chatml.apply(echo, false, cont),
            "<|im_start|>user\nyes<|im_end|>\n<|im_start|>assistant\nyes");
  // Without the option, the same conversation is closed as usual.
  EXPECT_EQ(chatml.apply(m, false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello, I am<|im_end|>\n");
}

TEST(ChatTemplate, ContinueFinalMessageRefusals) {
  const ChatOptions cont{nullptr, nullptr, true};
  const ChatTemplate chatml = ChatTemplate::by_name("chatml");
  const std::vector<ChatMessage> ends_with_user = {{"assistant", "a"}, {"user", "b"}};
  EXPECT_EQ(error_of([&] { chatml.apply(ends_with_user, false, cont); }),
            "continue_final_message: the final message is from 'user', not the assistant");
  const std::vector<ChatMessage> assistant = {{"user", "Hi"}, {"assistant", "Hello"}};
  EXPECT_EQ(error_of([&] { chatml.apply(assistant, true, cont); }),
            "continue_final_message and add_generation_prompt cannot both be set");
  const std::vector<ChatMessage> blank = {{"user", "Hi"}, {"assistant", " \n"}};
  EXPECT_EQ(error_of([&] { chatml.apply(blank, false, cont); }),
            "continue_final_message: the final message has no text to continue (use "
            "add_generation_prompt to start a new reply)");
  EXPECT_EQ(error_of([&] { chatml.apply({}, false, cont); }),
            "continue_final_message: there are no messages");
  // A template that does not write the content as given cannot be cut inside it.
  const ChatTemplate upper = ChatTemplate::from_source(
      "{% for m in messages %}{{ m.role }}: {{ m.content | upper }}\n{% endfor %}", "upper.jinja");
  EXPECT_EQ(error_of([&] { upper.apply(assistant, false, cont); }),
            "continue_final_message: the chat template (upper.jinja) does not write the final "
            "message's content as given, so the prompt cannot end inside it");
}

TEST(ChatTemplate, ResolveTakesNamesFilesAndText) {
  TokenizerSpec spec;
  spec.tokens = {"a", "<s>", "</s>"};
  spec.token_types = {1, 3, 3};
  spec.bos_id = 1;
  spec.eos_id = 2;
  spec.chat_template = "{{ bos_token }}model{{ eos_token }}";
  const Tokenizer tok(spec);
  EXPECT_EQ(ChatTemplate::resolve("", tok).apply({}, true), "<s>model</s>");
  EXPECT_EQ(ChatTemplate::resolve("chatml", tok).apply({}, true), "<|im_start|>assistant\n");
  EXPECT_EQ(ChatTemplate::resolve("{{ eos_token }}inline", tok).apply({}, true), "</s>inline");
  const std::filesystem::path file =
      std::filesystem::temp_directory_path() / "lserve_test_chat_template.jinja";
  std::ofstream(file) << "from {{ 'file' }}\n";
  const ChatTemplate from_file = ChatTemplate::resolve(file.string(), tok);
  EXPECT_EQ(from_file.apply({}, true), "from file");  // jinja2 drops one final newline
  EXPECT_EQ(from_file.origin(), file.string());
  std::filesystem::remove(file);
  EXPECT_NE(error_of([&] {
              ChatTemplate::resolve("no-such-template", tok);
            }).find("is not a builtin name (chatml, llama3), nor a file, nor template text"),
            std::string::npos);
}

}  // namespace
}  // namespace lserve
