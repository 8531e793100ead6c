// Model metadata read from GGUF files: configuration and tokenizer values that do not fit, or
// tensors that do not match the metadata, are errors naming the key or tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "gguf_samples.h"
#include "gguf_writer.h"
#include "io/gguf.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "test_util.h"

namespace lserve {
namespace {

using namespace test;  // the writer and the samples (gguf_samples.h)

// Model metadata read from a GGUF: integers that do not fit an int and tensors of layers past
// block_count are errors naming the key or tensor, not a different model.
TEST(GgufConfig, RefusesOutOfRangeCountsAndTensorsBeyondBlockCount) {
  std::mt19937_64 rng(test::test_seed());
  auto spec_with = [&](GgufVal block_count, const std::string& extra_tensor) {
    test::GgufSpec spec;
    spec.kvs = {{"general.architecture", test::gguf_str("llama")},
                {"llama.block_count", block_count},
                {"llama.embedding_length", test::gguf_u32(64)},
                {"llama.attention.head_count", test::gguf_u32(4)},
                {"llama.feed_forward_length", test::gguf_u32(128)},
                {"llama.context_length", test::gguf_u32(256)},
                {"llama.attention.layer_norm_rms_epsilon", test::gguf_f32(1e-5f)}};
    spec.tensors = {random_tensor(rng, "token_embd.weight", 0, {64, 100}),
                    random_tensor(rng, "blk.0.attn_q.weight", 0, {64, 64})};
    if (!extra_tensor.empty()) spec.tensors.push_back(random_tensor(rng, extra_tensor, 0, {64}));
    return spec;
  };
  auto error_of = [&](const test::GgufSpec& spec) -> std::string {
    TempFile f("config.gguf", test::build_gguf(spec).bytes);
    GgufFile g(f.path());
    try {
      config_from_gguf(g);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error_of(spec_with(test::gguf_u32(2), "blk.1.attn_norm.weight")), "no error");
  EXPECT_TRUE(contains(error_of(spec_with(test::gguf_u32(1), "blk.1.attn_norm.weight")),
                       "tensor blk.1.attn_norm.weight is beyond block_count 1"));
  EXPECT_TRUE(contains(error_of(spec_with(test::gguf_u64(4294967298ull), "")),
                       "block_count = 4294967298 is out of range"));
  // vocab_size was narrowed without a check: 2^32 + 100 became 100, which matched the embedding's
  // 100 rows, so the file loaded as if it said 100.
  test::GgufSpec vocab = spec_with(test::gguf_u32(1), "");
  vocab.kvs.emplace_back("llama.vocab_size", test::gguf_u64(4294967396ull));
  EXPECT_TRUE(contains(error_of(vocab), "vocab_size = 4294967396 is out of range"));
}

TEST(GgufConfig, ReadsRopeScalingMetadata) {
  std::mt19937_64 rng(test::test_seed());
  auto spec_with = [&](std::vector<std::pair<std::string, GgufVal>> extra) {
    test::GgufSpec spec;
    spec.kvs = {{"general.architecture", test::gguf_str("llama")},
                {"llama.block_count", test::gguf_u32(1)},
                {"llama.embedding_length", test::gguf_u32(64)},
                {"llama.attention.head_count", test::gguf_u32(4)},
                {"llama.feed_forward_length", test::gguf_u32(128)},
                {"llama.context_length", test::gguf_u32(4096)},
                {"llama.rope.freq_base", test::gguf_f32(10000.0f)},
                {"llama.attention.layer_norm_rms_epsilon", test::gguf_f32(1e-5f)}};
    for (auto& kv : extra) spec.kvs.push_back(std::move(kv));
    spec.tensors = {random_tensor(rng, "token_embd.weight", 0, {64, 100})};
    return spec;
  };
  auto config_of = [&](const test::GgufSpec& spec) {
    TempFile f("rope.gguf", test::build_gguf(spec).bytes);
    GgufFile g(f.path());
    return config_from_gguf(g);
  };
  const ModelConfig yarn =
      config_of(spec_with({{"llama.rope.scaling.type", test::gguf_str("yarn")},
                           {"llama.rope.scaling.factor", test::gguf_f32(4.0f)},
                           {"llama.rope.scaling.original_context_length", test::gguf_u32(1024)}}));
  EXPECT_EQ(yarn.rope_scaling, "yarn");
  EXPECT_EQ(yarn.rope_freq_factors, yarn_rope_factors(16, 10000.0f, 4.0f, 1024, 32, 1, true));
  EXPECT_NEAR(yarn.rope_attention_factor, 1.138629f, 1e-6);

  const ModelConfig linear =
      config_of(spec_with({{"llama.rope.scaling.type", test::gguf_str("linear")},
                           {"llama.rope.scaling.factor", test::gguf_f32(2.0f)}}));
  EXPECT_EQ(linear.rope_freq_factors, std::vector<float>(8, 2.0f));
  EXPECT_EQ(linear.rope_attention_factor, 1.0f);

  // Unknown scalings were ignored, which gave a model with the wrong positions without a word.
  try {
    config_of(spec_with({{"llama.rope.scaling.type", test::gguf_str("longrope")}}));
    ADD_FAILURE() << "accepted an unknown rope scaling";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "rope scaling type 'longrope' is not supported")) << e.what();
  }
}

TEST(GgufTokenizer, RefusesIdsAndTypesThatDoNotFitAnInt) {
  // Token ids and types were narrowed to int32 without a check: a bos_token_id of 2^32 + 1
  // became token 1 and a token type of 2^32 + 1 became 1 (normal), silently.
  auto spec_with = [](const std::string& key, GgufVal value) {
    test::GgufSpec spec;
    spec.kvs = {{"tokenizer.ggml.model", test::gguf_str("gpt2")},
                {"tokenizer.ggml.tokens", gguf_array(kGgufString, {gguf_str("a"), gguf_str("b")})},
                {"tokenizer.ggml.merges", gguf_array(kGgufString, {})}};
    if (!key.empty()) spec.kvs.emplace_back(key, std::move(value));
    return spec;
  };
  auto error_of = [&](const test::GgufSpec& spec) -> std::string {
    TempFile f("tokenizer.gguf", test::build_gguf(spec).bytes);
    GgufFile g(f.path());
    try {
      tokenizer_spec_from_gguf(g);
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), f.path())) << e.what();
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error_of(spec_with("", {})), "no error");
  EXPECT_EQ(error_of(spec_with("tokenizer.ggml.bos_token_id", gguf_i64(-1))), "no error");
  EXPECT_TRUE(contains(error_of(spec_with("tokenizer.ggml.bos_token_id", gguf_u64(4294967297ull))),
                       "tokenizer.ggml.bos_token_id = 4294967297 is not a token id"));
  EXPECT_TRUE(contains(error_of(spec_with("tokenizer.ggml.eos_token_id", gguf_i64(-2))),
                       "tokenizer.ggml.eos_token_id = -2 is not a token id"));
  EXPECT_TRUE(
      contains(error_of(spec_with("tokenizer.ggml.token_type",
                                  gguf_array(kGgufI64, {gguf_i64(1), gguf_i64(4294967297ll)}))),
               "token_type of token 1 is 4294967297"));
  EXPECT_EQ(error_of(spec_with("tokenizer.ggml.token_type",
                               gguf_array(kGgufI32, {gguf_i32(1), gguf_i32(3)}))),
            "no error");
}

}  // namespace
}  // namespace lserve
