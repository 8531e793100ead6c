// The request parser of /v1/completions and /v1/chat/completions (src/server/openai_request.cpp):
// the prompt shapes OpenAI and vLLM accept, echo, continue_final_message, and the 400s that name
// the field at fault.
#include <gtest/gtest.h>

#include <string>

#include "server/api_error.h"
#include "server/openai_request.h"

namespace lserve::server {
namespace {

using nlohmann::json;

// The 400 a body gets: "param: message"; "(no error)" if it parses.
std::string completion_error(const json& body) {
  try {
    parse_completion_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    return e.param() + ": " + e.what();
  }
  return "(no error)";
}

std::string chat_error(const json& body) {
  try {
    parse_chat_request(body);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    return e.param() + ": " + e.what();
  }
  return "(no error)";
}

TEST(OpenAiRequest, PromptShapes) {
  GenerationRequest r = parse_completion_request({{"prompt", "one"}});
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "one");

  r = parse_completion_request(json::parse(R"({"prompt": ["one", "two", "three"]})"));
  ASSERT_EQ(r.prompts.size(), 3u);
  EXPECT_EQ(r.prompts[0].text, "one");
  EXPECT_EQ(r.prompts[2].text, "three");

  // An array of ids is one prompt.
  r = parse_completion_request(json::parse(R"({"prompt": [1, 2, 3]})"));
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_FALSE(r.prompts[0].text.has_value());
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));

  r = parse_completion_request(json::parse(R"({"prompt": [[1, 2], [3]]})"));
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{3}));
  EXPECT_FALSE(r.prompts[1].text.has_value());
}

TEST(OpenAiRequest, BadPromptShapesAre400NamingPrompt) {
  EXPECT_EQ(completion_error({{"max_tokens", 3}}), "prompt: 'prompt' is required");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": []})")),
            "prompt: 'prompt' is an empty array: give at least one prompt");
  const std::string shape =
      "prompt: 'prompt' must be a string, an array of strings, an array of token ids, or an array "
      "of arrays of token ids";
  EXPECT_EQ(completion_error({{"prompt", 5}}), shape);
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": {}})")), shape);
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [true]})")), shape);
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": ["a", [1]]})")),
            "prompt: 'prompt' mixes types: prompt[0] is a string but prompt[1] is an array; an "
            "array of prompts must hold only strings or only arrays of token ids");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [[1], "a"]})")),
            "prompt: 'prompt' mixes types: prompt[0] is an array but prompt[1] is a string; an "
            "array of prompts must hold only strings or only arrays of token ids");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [1, "a"]})")),
            "prompt: 'prompt' must be an array of integers");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [1, -2]})")),
            "prompt: 'prompt' values must be between 0 and 2147483647, got -2");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [[1], [2, "x"]]})")),
            "prompt: 'prompt[1]' must be an array of integers");
  EXPECT_EQ(completion_error(json::parse(R"({"prompt": [["a"], ["b"]]})")),
            "prompt: 'prompt[0]' must be an array of integers");
}

TEST(OpenAiRequest, ChoicesOverAllPromptsAreCapped) {
  json body = {{"prompt", json::array()}, {"n", 2}};
  for (int i = 0; i < 8; ++i) body["prompt"].push_back("p");
  const GenerationRequest r = parse_completion_request(body);  // 16 choices: the cap
  EXPECT_EQ(r.prompts.size(), 8u);
  EXPECT_EQ(r.n, 2);
  body["prompt"].push_back("p");
  EXPECT_EQ(completion_error(body),
            "prompt: 9 prompts with n = 2 make 18 choices; a request may have at most 16 (prompts "
            "x n)");
  EXPECT_EQ(completion_error({{"prompt", "p"}, {"n", 17}}),
            "n: 'n' must be between 1 and 16, got 17");
}

TEST(OpenAiRequest, Echo) {
  EXPECT_FALSE(parse_completion_request({{"prompt", "p"}}).echo);
  EXPECT_TRUE(parse_completion_request({{"prompt", "p"}, {"echo", true}}).echo);
  EXPECT_EQ(completion_error({{"prompt", "p"}, {"echo", "yes"}}), "echo: 'echo' must be a boolean");
  // vLLM would add the prompt tokens' logprobs, which lserve does not compute: refused, for any
  // logprobs value, 0 included.
  for (int logprobs : {0, 3}) {
    EXPECT_EQ(completion_error({{"prompt", "p"}, {"echo", true}, {"logprobs", logprobs}}),
              "echo: 'echo' with 'logprobs' is not supported: lserve does not compute the prompt "
              "tokens' log-probabilities");
  }
  EXPECT_EQ(completion_error({{"prompt", "p"}, {"echo", false}, {"logprobs", 2}}), "(no error)");
  const json chat = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"echo", true}};
  EXPECT_EQ(chat_error(chat), "echo: 'echo' is only supported on /v1/completions");
}

TEST(OpenAiRequest, ContinueFinalMessage) {
  const json messages = json::parse(
      R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, I"}])");
  GenerationRequest r = parse_chat_request(
      {{"messages", messages}, {"continue_final_message", true}, {"add_generation_prompt", false}});
  EXPECT_TRUE(r.continue_final_message);
  EXPECT_FALSE(r.add_generation_prompt);
  EXPECT_FALSE(parse_chat_request({{"messages", messages}}).continue_final_message);

  // add_generation_prompt defaults to true, as in vLLM: the client must turn it off.
  const std::string both =
      "continue_final_message: 'continue_final_message' and 'add_generation_prompt' cannot both "
      "be true (set 'add_generation_prompt' to false to continue the final message)";
  EXPECT_EQ(chat_error({{"messages", messages}, {"continue_final_message", true}}), both);
  EXPECT_EQ(chat_error({{"messages", messages},
                        {"continue_final_message", true},
                        {"add_generation_prompt", true}}),
            both);
  const json user_last = json::parse(R"([{"role": "user", "content": "Hi"}])");
  EXPECT_EQ(chat_error({{"messages", user_last},
                        {"continue_final_message", true},
                        {"add_generation_prompt", false}}),
            "continue_final_message: 'continue_final_message' needs the last message to be from "
            "the assistant, not 'user'");
  EXPECT_EQ(chat_error({{"messages", messages}, {"continue_final_message", 1}}),
            "continue_final_message: 'continue_final_message' must be a boolean");
}

}  // namespace
}  // namespace lserve::server
