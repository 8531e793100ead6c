// GGUF reader, well-formed files: files written by the independent test writer (gguf_writer.h)
// round-trip, metadata getters check types, tensors are found where the file puts them.
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

TEST(GgufFile, RoundTripsMetadataOfEveryValueTypeInV2AndV3) {
  std::mt19937_64 rng(test::test_seed());
  for (uint32_t version : {2u, 3u}) {
    SCOPED_TRACE(testing::Message() << "version " << version);
    const Sample s = make_sample(rng, version);
    const GgufImage img = test::build_gguf(s.spec);
    TempFile f("roundtrip.gguf", img.bytes);
    GgufFile g(f.path());
    EXPECT_EQ(g.path(), f.path());
    EXPECT_EQ(g.version(), version);
    EXPECT_EQ(g.alignment(), 32u);
    EXPECT_EQ(g.metadata().size(), s.spec.kvs.size());

    // The stored type is kept for messages, the value widened.
    const std::pair<const char*, GgufValueType> types[] = {
        {"t.u8", GgufValueType::U8},      {"t.i8", GgufValueType::I8},
        {"t.u16", GgufValueType::U16},    {"t.i16", GgufValueType::I16},
        {"t.u32", GgufValueType::U32},    {"t.i32", GgufValueType::I32},
        {"t.u64", GgufValueType::U64},    {"t.i64", GgufValueType::I64},
        {"t.f32", GgufValueType::F32},    {"t.f64", GgufValueType::F64},
        {"t.true", GgufValueType::BOOL},  {"t.string", GgufValueType::STRING},
        {"t.ints", GgufValueType::ARRAY},
    };
    for (const auto& [key, type] : types) {
      ASSERT_TRUE(g.has(key)) << key;
      EXPECT_EQ(g.find(key)->type, type) << key;
    }
    EXPECT_EQ(std::get<uint64_t>(g.find("t.u8")->value), s.u8);
    EXPECT_EQ(std::get<int64_t>(g.find("t.i8")->value), s.i8);
    EXPECT_EQ(std::get<uint64_t>(g.find("t.u16")->value), s.u16);
    EXPECT_EQ(std::get<int64_t>(g.find("t.i16")->value), s.i16);
    EXPECT_EQ(std::get<uint64_t>(g.find("t.u32")->value), s.u32);
    EXPECT_EQ(std::get<int64_t>(g.find("t.i32")->value), s.i32);
    EXPECT_EQ(std::get<uint64_t>(g.find("t.u64")->value), s.u64);
    EXPECT_EQ(std::get<int64_t>(g.find("t.i64")->value), s.i64);

    EXPECT_EQ(g.get_int("t.u8"), s.u8);
    EXPECT_EQ(g.get_int("t.i8"), s.i8);
    EXPECT_EQ(g.get_int("t.u16"), s.u16);
    EXPECT_EQ(g.get_int("t.i16"), s.i16);
    EXPECT_EQ(g.get_int("t.u32"), s.u32);
    EXPECT_EQ(g.get_int("t.i32"), s.i32);
    EXPECT_EQ(g.get_int("t.u64"), static_cast<int64_t>(s.u64));
    EXPECT_EQ(g.get_int("t.i64"), s.i64);
    // f32 widens to double exactly; compare bit patterns, not approximately.
    EXPECT_EQ(g.get_float("t.f32"), static_cast<double>(s.f32));
    EXPECT_EQ(g.get_float("t.f64"), s.f64);
    EXPECT_TRUE(g.get_bool("t.true"));
    EXPECT_FALSE(g.get_bool("t.false"));
    EXPECT_EQ(g.get_string("t.string"), s.text);
    EXPECT_EQ(g.get_string("t.empty_string"), "");
    EXPECT_EQ(g.get_string("general.architecture"), "llama");

    const std::vector<int64_t> ints(s.ints.begin(), s.ints.end());
    EXPECT_EQ(g.get_int_array("t.ints"), ints);
    EXPECT_EQ(g.get_string_array("t.strings"), s.strings);
    const std::vector<double> floats(s.floats.begin(), s.floats.end());
    EXPECT_EQ(g.get_float_array("t.floats"), floats);
    EXPECT_TRUE(g.get_int_array("t.empty_array").empty());
    const auto& arr = std::get<std::shared_ptr<GgufArray>>(g.find("t.strings")->value);
    EXPECT_EQ(arr->elem_type, GgufValueType::STRING);

    expect_tensors(g, s.spec, img);
  }
}

TEST(GgufFile, OpensFromMemoryAsFromAFile) {
  // The in-memory entry point (the fuzz targets use it) reads the same metadata and tensors, points
  // the tensors into the caller's bytes and names the given source in its errors.
  std::mt19937_64 rng(test::test_seed());
  const Sample s = make_sample(rng, 3);
  const GgufImage img = test::build_gguf(s.spec);
  TempFile f("memory.gguf", img.bytes);
  const GgufFile from_file(f.path());
  const GgufFile g(img.bytes, "in-memory.gguf");
  EXPECT_EQ(g.path(), "in-memory.gguf");
  EXPECT_EQ(g.version(), 3u);
  ASSERT_EQ(g.metadata().size(), from_file.metadata().size());
  EXPECT_EQ(g.get_string("t.string"), s.text);
  EXPECT_EQ(g.get_int("t.i64"), s.i64);
  EXPECT_EQ(g.get_float_array("t.floats"), from_file.get_float_array("t.floats"));
  ASSERT_EQ(g.tensors().size(), s.spec.tensors.size());
  for (size_t i = 0; i < s.spec.tensors.size(); ++i) {
    const GgufTensorInfo& t = g.tensors()[i];
    EXPECT_EQ(t.name, from_file.tensors()[i].name);
    EXPECT_EQ(t.dims, from_file.tensors()[i].dims);
    EXPECT_EQ(t.n_bytes, from_file.tensors()[i].n_bytes);
    EXPECT_EQ(t.data, img.bytes.data() + img.data_start + img.offsets[i]) << t.name;
  }

  const std::vector<uint8_t> cut(img.bytes.begin(), img.bytes.begin() + img.infos_end - 3);
  try {
    GgufFile bad(cut, "cut.gguf");
    ADD_FAILURE() << "a truncated image opened";
  } catch (const Error& e) {
    EXPECT_TRUE(test::contains(e.what(), "cut.gguf: truncated")) << e.what();
  }
}

TEST(GgufFile, HonoursCustomAlignment) {
  std::mt19937_64 rng(test::test_seed());
  for (uint32_t alignment : {1u, 8u, 64u, 256u, 4096u}) {
    SCOPED_TRACE(testing::Message() << "alignment " << alignment);
    GgufSpec spec;
    spec.alignment = alignment;
    spec.kvs = {{"general.alignment", gguf_u32(alignment)}};
    // Odd byte counts (F16 x 5 = 10 bytes) so each tensor needs padding before the next.
    spec.tensors = {random_tensor(rng, "a", 1, {5}), random_tensor(rng, "b", 0, {3, 3}),
                    random_tensor(rng, "c", 2, {32, 7}), random_tensor(rng, "d", 30, {1})};
    const GgufImage img = test::build_gguf(spec);
    TempFile f("aligned.gguf", img.bytes);
    GgufFile g(f.path());
    EXPECT_EQ(g.alignment(), alignment);
    EXPECT_EQ(img.data_start % alignment, 0u);
    expect_tensors(g, spec, img);
  }
}

TEST(GgufFile, OpensAFileWithoutTensors) {
  // Vocabulary-only GGUF files (llama.cpp's ggml-vocab-*.gguf) hold metadata and no tensors.
  GgufSpec spec;
  spec.kvs = {{"tokenizer.ggml.model", gguf_str("gpt2")}};
  TempFile f("vocab.gguf", test::build_gguf(spec).bytes);
  GgufFile g(f.path());
  EXPECT_TRUE(g.tensors().empty());
  EXPECT_EQ(g.get_string("tokenizer.ggml.model"), "gpt2");
}

TEST(GgufFile, RejectsInvalidAlignmentValues) {
  const std::vector<GgufVal> bad = {gguf_u32(0),    gguf_u32(48),    gguf_u32(131072),
                                    gguf_str("32"), gguf_f32(32.0f), gguf_i32(-32)};
  for (const auto& v : bad) {
    GgufSpec spec;
    spec.kvs = {{"general.alignment", v}};
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "general.alignment")) << msg;
  }
}

TEST(GgufFile, TypedGettersRejectWrongTypesAndMissingKeys) {
  GgufSpec spec;
  spec.kvs = {{"k.f32", gguf_f32(1.5f)},
              {"k.str", gguf_str("x")},
              {"k.bool", gguf_bool(true)},
              {"k.u8", gguf_u8(200)},
              {"k.i16", gguf_i16(-7)},
              {"k.huge", gguf_u64(uint64_t{1} << 63)},
              {"k.ints", gguf_array(kGgufI32, {gguf_i32(1)})}};
  TempFile f("getters.gguf", test::build_gguf(spec).bytes);
  GgufFile g(f.path());

  // An integer is an acceptable float, not the other way round.
  EXPECT_EQ(g.get_float("k.u8"), 200.0);
  EXPECT_EQ(g.get_float("k.i16"), -7.0);
  EXPECT_EQ(g.get_int("k.i16"), -7);

  auto expect_error = [&](auto&& fn, const std::string& key, const std::string& what) {
    try {
      fn();
      ADD_FAILURE() << key << ": no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_TRUE(contains(msg, key)) << msg;
      EXPECT_TRUE(contains(msg, f.path())) << msg;
      EXPECT_TRUE(contains(msg, what)) << msg;
    }
  };
  expect_error([&] { g.get_int("k.f32"); }, "k.f32", "f32");
  expect_error([&] { g.get_int("k.str"); }, "k.str", "string");
  expect_error([&] { g.get_int("k.bool"); }, "k.bool", "bool");
  expect_error([&] { g.get_float("k.str"); }, "k.str", "string");
  expect_error([&] { g.get_string("k.u8"); }, "k.u8", "u8");
  expect_error([&] { g.get_string("k.ints"); }, "k.ints", "array");
  expect_error([&] { g.get_bool("k.u8"); }, "k.u8", "u8");
  expect_error([&] { g.get_int("k.ints"); }, "k.ints", "array");
  // 2^63 does not fit the int64 the getter returns; it must not wrap to a negative number.
  expect_error([&] { g.get_int("k.huge"); }, "k.huge", "u64");
  for (const char* key : {"missing.key", ""}) {
    expect_error([&] { g.get_int(key); }, key, "missing");
    expect_error([&] { g.get_float(key); }, key, "missing");
    expect_error([&] { g.get_string(key); }, key, "missing");
    expect_error([&] { g.get_bool(key); }, key, "missing");
    expect_error([&] { g.get_int_array(key); }, key, "missing");
    expect_error([&] { g.get_string_array(key); }, key, "missing");
    expect_error([&] { g.get_float_array(key); }, key, "missing");
  }

  // opt_* returns nothing for a missing key but still rejects a wrong type.
  EXPECT_FALSE(g.opt_int("missing.key").has_value());
  EXPECT_FALSE(g.opt_float("missing.key").has_value());
  EXPECT_FALSE(g.opt_string("missing.key").has_value());
  EXPECT_FALSE(g.opt_bool("missing.key").has_value());
  EXPECT_EQ(g.opt_int("k.u8"), 200);
  EXPECT_EQ(g.opt_string("k.str"), "x");
  EXPECT_EQ(g.opt_bool("k.bool"), true);
  EXPECT_EQ(g.opt_float("k.f32"), 1.5);
  EXPECT_THROW(g.opt_int("k.str"), Error);
  EXPECT_THROW(g.opt_string("k.u8"), Error);
  EXPECT_THROW(g.opt_bool("k.u8"), Error);
  EXPECT_THROW(g.opt_float("k.bool"), Error);
  EXPECT_EQ(g.find("missing.key"), nullptr);
  EXPECT_FALSE(g.has("missing.key"));
}

// get_float promises "any float or integer type", but a u64 above INT64_MAX goes through the
// int64 conversion and is rejected as "not a number". Disabled until gguf.cpp's as_float
// converts uint64 directly (see the report with the proposed fix).
TEST(GgufFile, GetFloatAcceptsEveryU64) {
  GgufSpec spec;
  spec.kvs = {{"k.huge", gguf_u64(~uint64_t{0})},
              {"a.huge", gguf_array(kGgufU64, {gguf_u64(uint64_t{1} << 63)})}};
  TempFile f("u64.gguf", test::build_gguf(spec).bytes);
  GgufFile g(f.path());
  EXPECT_EQ(g.get_float("k.huge"), 18446744073709551616.0);
  EXPECT_EQ(g.get_float_array("a.huge"), std::vector<double>{9223372036854775808.0});
}

TEST(GgufFile, ArrayGettersCheckElementTypes) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<GgufVal> u8s, i64s, u64s, f64s, strs;
  std::vector<int64_t> want_u8, want_i64, want_u64;
  std::vector<double> want_f64;
  const int n = 1 + static_cast<int>(rng() % 40);
  for (int i = 0; i < n; ++i) {
    const auto a = static_cast<uint8_t>(rng());
    const auto b = static_cast<int64_t>(rng());
    const uint64_t c = rng() >> 1;
    const double d = std::uniform_real_distribution<double>(-1, 1)(rng);
    u8s.push_back(gguf_u8(a));
    i64s.push_back(gguf_i64(b));
    u64s.push_back(gguf_u64(c));
    f64s.push_back(gguf_f64(d));
    strs.push_back(gguf_str(std::to_string(i)));
    want_u8.push_back(a);
    want_i64.push_back(b);
    want_u64.push_back(static_cast<int64_t>(c));
    want_f64.push_back(d);
  }
  GgufSpec spec;
  spec.kvs = {{"a.u8", gguf_array(kGgufU8, u8s)},
              {"a.i64", gguf_array(kGgufI64, i64s)},
              {"a.u64", gguf_array(kGgufU64, u64s)},
              {"a.f64", gguf_array(kGgufF64, f64s)},
              {"a.str", gguf_array(kGgufString, strs)},
              {"a.huge", gguf_array(kGgufU64, {gguf_u64(~uint64_t{0})})},
              {"scalar", gguf_u32(3)}};
  TempFile f("arrays.gguf", test::build_gguf(spec).bytes);
  GgufFile g(f.path());
  EXPECT_EQ(g.get_int_array("a.u8"), want_u8);
  EXPECT_EQ(g.get_int_array("a.i64"), want_i64);
  EXPECT_EQ(g.get_int_array("a.u64"), want_u64);
  EXPECT_EQ(g.get_float_array("a.f64"), want_f64);
  const std::vector<double> u8_as_double(want_u8.begin(), want_u8.end());
  EXPECT_EQ(g.get_float_array("a.u8"), u8_as_double);
  EXPECT_EQ(g.get_string_array("a.str").size(), static_cast<size_t>(n));
  EXPECT_EQ(g.get_string_array("a.str").back(), std::to_string(n - 1));

  for (auto&& [fn, key] : std::vector<std::pair<std::function<void()>, std::string>>{
           {[&] { g.get_string_array("a.u8"); }, "a.u8"},
           {[&] { g.get_int_array("a.str"); }, "a.str"},
           {[&] { g.get_int_array("a.f64"); }, "a.f64"},
           {[&] { g.get_float_array("a.str"); }, "a.str"},
           {[&] { g.get_int_array("a.huge"); }, "a.huge"},
           {[&] { g.get_int_array("scalar"); }, "scalar"},
           {[&] { g.get_string_array("scalar"); }, "scalar"}}) {
    try {
      fn();
      ADD_FAILURE() << key << ": no error";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "'" + key + "'")) << e.what();
    }
  }
}

TEST(GgufFile, AcceptsArraysOfArraysButRejectsDeeperNesting) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<std::vector<int32_t>> rows(1 + rng() % 4);
  std::vector<GgufVal> inner;
  for (auto& row : rows) {
    std::vector<GgufVal> items;
    row.resize(rng() % 5);  // empty rows included
    for (auto& x : row) {
      x = static_cast<int32_t>(rng());
      items.push_back(gguf_i32(x));
    }
    inner.push_back(gguf_array(kGgufI32, items));
  }
  {
    GgufSpec spec;
    spec.kvs = {{"nested", gguf_array(kGgufArray, inner)}};
    TempFile f("nested.gguf", test::build_gguf(spec).bytes);
    GgufFile g(f.path());
    const auto& outer = std::get<std::shared_ptr<GgufArray>>(g.find("nested")->value);
    EXPECT_EQ(outer->elem_type, GgufValueType::ARRAY);
    ASSERT_EQ(outer->items.size(), rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& a = std::get<std::shared_ptr<GgufArray>>(outer->items[i].value);
      EXPECT_EQ(a->elem_type, GgufValueType::I32);
      ASSERT_EQ(a->items.size(), rows[i].size());
      for (size_t j = 0; j < rows[i].size(); ++j) {
        EXPECT_EQ(std::get<int64_t>(a->items[j].value), rows[i][j]);
      }
    }
    // An array of arrays is not an array of integers.
    EXPECT_THROW(g.get_int_array("nested"), Error);
  }
  {
    // Three levels: hostile files could otherwise recurse without bound.
    GgufSpec spec;
    spec.kvs = {{"deep", gguf_array(kGgufArray, {gguf_array(kGgufArray, {inner[0]})})}};
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "deep")) << msg;
    EXPECT_TRUE(contains(msg, "nest")) << msg;
  }
}

TEST(GgufFile, MissingTensorIsAnErrorNamingIt) {
  GgufSpec spec;
  std::mt19937_64 rng(test::test_seed());
  spec.tensors = {random_tensor(rng, "present", 0, {3})};
  TempFile f("lookup.gguf", test::build_gguf(spec).bytes);
  GgufFile g(f.path());
  EXPECT_EQ(g.find_tensor("absent"), nullptr);
  try {
    g.tensor("absent");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "absent")) << e.what();
    EXPECT_TRUE(contains(e.what(), f.path())) << e.what();
  }
}

}  // namespace
}  // namespace lserve
