// Helpers of the tests on real models (the default model, Gemma 3): their llama.cpp fixtures
// (scripts/make-golden.py, scripts/make-gemma3-golden.py) and greedy runs through the engine.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "test_util.h"

namespace lserve::test {

// tests/fixtures/`name`, parsed; a missing file fails the test.
nlohmann::json load_golden(const std::string& name);

// Expects `tok` to give each text of a fixture llama.cpp's tokens: its "logit_prompts" with the
// BOS where the tokenizer adds one, its "token_only" without. With `round_trip`, decoding the
// tokens must also give back the text. Returns how many texts were checked.
int expect_golden_tokens(const Tokenizer& tok, const nlohmann::json& golden, bool round_trip);

// lserve's logits against a fixture's at llama.cpp's top-5 ids: llama.cpp's own values, and
// those of a second reference recorded beside them (the float64 NumPy forward, transformers' f32).
struct GoldenLogitStats {
  int positions = 0;
  int top1_same = 0;      // lserve's top-1 is llama.cpp's
  int decisive = 0;       // positions where llama.cpp's top-2 are more than the tie margin apart
  int decisive_same = 0;  // ... and lserve's top-1 is llama.cpp's
  int64_t values = 0;     // top-5 values compared
  double max_diff = 0, sum_diff = 0;            // |lserve - llama.cpp|
  double max_ref = 0, sum_ref = 0;              // |lserve - the second reference|
  double max_llama_ref = 0, sum_llama_ref = 0;  // |llama.cpp - the second reference|
};

// Adds positions [from, tokens) of the fixture's prompt `p` to `s`; `logits` holds lserve's for
// those positions, [(tokens - from) * vocab], and `reference_key` names the second reference's
// values. Where lserve's top-1 is not llama.cpp's, it must be one of llama.cpp's top 5 that
// llama.cpp scores within `tie_margin` of its best (a fatal failure when it is not in the top 5).
void add_golden_logits(const nlohmann::json& p, const std::vector<float>& logits, int vocab,
                       int from, const char* reference_key, double tie_margin, GoldenLogitStats& s);

// The greedy token of a logits row, with its logprob.
struct GreedyPick {
  int32_t token = 0;
  double logprob = 0;
};
GreedyPick greedy_pick(const std::vector<float>& row);

// Runs `prompt` through `e` as one greedy request of `n` tokens (EOS ignored) and returns the
// tokens with their logprobs.
std::vector<TokenLogprob> greedy_logprobs(Engine& e, const std::vector<int32_t>& prompt, int n);

}  // namespace lserve::test
