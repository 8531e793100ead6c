// Safetensors reader: files written here (u64 LE header length | JSON header | data) must
// round-trip in single-file and sharded folders, and every malformed header, offset or folder must
// be an lserve::Error naming the file, never a crash or an out-of-bounds pointer.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "gguf_writer.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace lserve {
namespace {

using test::contains;
using test::TempDir;
using test::TempFile;

struct StSpec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

size_t st_dtype_bytes(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64") return 8;
  if (dtype == "F32" || dtype == "I32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16") return 2;
  return 1;
}

StSpec random_st(std::mt19937_64& rng, std::string name, std::string dtype,
                 std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  StSpec s{std::move(name), std::move(dtype), std::move(shape), {}};
  s.data.resize(static_cast<size_t>(n) * st_dtype_bytes(s.dtype));
  for (auto& b : s.data) b = static_cast<uint8_t>(rng());
  if (s.dtype == "BOOL") {
    for (auto& b : s.data) b &= 1;
  }
  return s;
}

std::vector<uint8_t> st_file(const std::string& header, const std::vector<uint8_t>& data,
                             std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t len = header_len.value_or(header.size());
  std::vector<uint8_t> out;
  out.reserve(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(len >> (8 * i)));  // LE
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// The header the Hugging Face writer makes: tensors packed in order, __metadata__ first, the
// JSON padded with spaces to a multiple of 8 bytes.
nlohmann::json st_header(const std::vector<StSpec>& tensors, std::vector<uint8_t>* data) {
  nlohmann::json h = nlohmann::json::object();
  h["__metadata__"] = {{"format", "pt"}};
  for (const auto& t : tensors) {
    const uint64_t begin = data->size();
    data->insert(data->end(), t.data.begin(), t.data.end());
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data->size()}}};
  }
  return h;
}

std::vector<uint8_t> build_st(const std::vector<StSpec>& tensors) {
  std::vector<uint8_t> data;
  std::string header = st_header(tensors, &data).dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  return st_file(header, data);
}

std::string open_error(const std::vector<uint8_t>& bytes) {
  return test::open_error<SafetensorsFile>("bad.safetensors", bytes);
}

std::string open_error(const std::string& header, const std::vector<uint8_t>& data = {}) {
  return open_error(st_file(header, data));
}

// f32 value of element i of a float tensor as stored, converted independently of st_to_f32
// (f16 through f16_to_f32, which DequantHalf checks for all 65536 inputs).
float stored_as_f32(const StSpec& s, size_t i) {
  const uint8_t* p = s.data.data();
  if (s.dtype == "F32") {
    float f;
    std::memcpy(&f, p + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, 2);
  if (s.dtype == "F16") return f16_to_f32(h);
  if (s.dtype == "BF16") return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
  double d;
  std::memcpy(&d, p + 8 * i, 8);
  return static_cast<float>(d);
}

void expect_tensor(const StTensor& t, const StSpec& want, const std::string& file) {
  SCOPED_TRACE(want.name);
  EXPECT_EQ(t.name, want.name);
  EXPECT_EQ(st_dtype_name(t.dtype), want.dtype);
  EXPECT_EQ(t.shape, want.shape);
  int64_t n = 1;
  for (int64_t d : want.shape) n *= d;
  EXPECT_EQ(t.n_elements, n);
  EXPECT_EQ(t.n_bytes, want.data.size());
  EXPECT_EQ(t.file, file);
  ASSERT_NE(t.data, nullptr);
  if (!want.data.empty()) {
    EXPECT_EQ(std::memcmp(t.data, want.data.data(), want.data.size()), 0);
  }
  if (want.dtype == "F32" || want.dtype == "F16" || want.dtype == "BF16" || want.dtype == "F64") {
    std::vector<float> out(static_cast<size_t>(n) + 1, 1234.5f);
    st_to_f32(t, out.data());
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
      // Bit patterns, so NaN payloads from random bytes compare too.
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(stored_as_f32(want, i)))
          << "element " << i;
    }
    EXPECT_EQ(out[n], 1234.5f) << "st_to_f32 wrote past the tensor";
  }
}

std::vector<StSpec> sample_tensors(std::mt19937_64& rng) {
  return {
      random_st(rng, "model.embed_tokens.weight", "F32", {3, 5, 7}),
      random_st(rng, "model.norm.weight", "F16", {1 + static_cast<int64_t>(rng() % 97)}),
      random_st(rng, "lm_head.weight", "BF16", {11, 1, 3}),
      random_st(rng, "scalar", "BF16", {}),  // no dimensions: one element
      random_st(rng, "empty", "F32", {0, 4}),
      random_st(rng, "rope.inv_freq", "F64", {2, 1, 3}),
      random_st(rng, "position_ids", "I64", {1, 5}),
      random_st(rng, "mask", "BOOL", {9}),
  };
}

TEST(SafetensorsFile, ReadsTensorsOfEveryDtypeAndOddShapes) {
  std::mt19937_64 rng(test::test_seed());
  const auto tensors = sample_tensors(rng);
  TempFile f("model.safetensors", build_st(tensors));
  SafetensorsFile st(f.path());
  EXPECT_EQ(st.path(), f.path());
  EXPECT_EQ(st.tensors().size(), tensors.size()) << "__metadata__ is not a tensor";
  EXPECT_EQ(st.tensors().count("__metadata__"), 0u);
  for (const auto& want : tensors) {
    ASSERT_EQ(st.tensors().count(want.name), 1u) << want.name;
    expect_tensor(st.tensors().at(want.name), want, f.path());
  }
}

TEST(SafetensorsFile, AcceptsOutOfOrderAndUnpaddedHeaders) {
  // Nothing requires the header to list tensors in data order or to be padded; offsets decide.
  std::mt19937_64 rng(test::test_seed());
  const StSpec a = random_st(rng, "a", "F32", {13}), b = random_st(rng, "b", "F16", {3, 3});
  std::vector<uint8_t> data = b.data;
  data.insert(data.end(), a.data.begin(), a.data.end());
  nlohmann::json h;
  h["a"] = {{"dtype", "F32"}, {"shape", {13}}, {"data_offsets", {b.data.size(), data.size()}}};
  h["b"] = {{"dtype", "F16"}, {"shape", {3, 3}}, {"data_offsets", {0, b.data.size()}}};
  TempFile f("unordered.safetensors", st_file(h.dump(), data));
  SafetensorsFile st(f.path());
  expect_tensor(st.tensors().at("a"), a, f.path());
  expect_tensor(st.tensors().at("b"), b, f.path());
}

TEST(SafetensorsFile, OpensFromMemoryAsFromAFile) {
  // The in-memory entry point (the fuzz targets use it): same tensors, pointing into the caller's
  // bytes, and errors that name the given source.
  std::mt19937_64 rng(test::test_seed());
  const std::vector<StSpec> tensors = sample_tensors(rng);
  const std::vector<uint8_t> bytes = build_st(tensors);
  SafetensorsFile st(bytes, "in-memory.safetensors");
  EXPECT_EQ(st.path(), "in-memory.safetensors");
  ASSERT_EQ(st.tensors().size(), tensors.size());
  for (const auto& want : tensors) {
    const StTensor& t = st.tensors().at(want.name);
    expect_tensor(t, want, "in-memory.safetensors");
    EXPECT_GE(t.data, bytes.data());
    EXPECT_LE(t.data + t.n_bytes, bytes.data() + bytes.size());
  }
  try {
    const std::span<const uint8_t> cut = std::span(bytes).first(bytes.size() - 1);
    SafetensorsFile bad(cut, "cut.safetensors");
    ADD_FAILURE() << "a truncated image opened";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "cut.safetensors")) << e.what();
  }
}

TEST(SafetensorsFile, ToF32OfAnEmptyTensorTouchesNothing) {
  // Found by fuzz_safetensors: converting a tensor with a zero dimension into an empty vector's
  // data() (null) called memcpy with a null pointer, undefined behaviour UBSan reports.
  const std::vector<StSpec> tensors = {{"empty", "F32", {0, 4}, {}}, {"none", "F16", {3, 0}, {}}};
  const std::vector<uint8_t> bytes = build_st(tensors);
  SafetensorsFile st(bytes, "empty.safetensors");
  for (const auto& want : tensors) {
    const StTensor& t = st.tensors().at(want.name);
    EXPECT_EQ(t.n_elements, 0);
    std::vector<float> out;
    st_to_f32(t, out.data());
  }
}

TEST(SafetensorsFile, ToF32RejectsNonFloatDtypes) {
  std::mt19937_64 rng(test::test_seed());
  const std::vector<StSpec> tensors = {
      random_st(rng, "t.i64", "I64", {3}), random_st(rng, "t.i32", "I32", {3}),
      random_st(rng, "t.i16", "I16", {3}), random_st(rng, "t.i8", "I8", {3}),
      random_st(rng, "t.u8", "U8", {3}),   random_st(rng, "t.bool", "BOOL", {3})};
  TempFile f("ints.safetensors", build_st(tensors));
  SafetensorsFile st(f.path());
  std::vector<float> out(3, 7.0f);
  for (const auto& want : tensors) {
    const StTensor& t = st.tensors().at(want.name);
    expect_tensor(t, want, f.path());
    try {
      st_to_f32(t, out.data());
      ADD_FAILURE() << want.name << " converted";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), want.name)) << e.what();
      EXPECT_TRUE(contains(e.what(), want.dtype)) << e.what();
    }
  }
  for (float x : out) EXPECT_EQ(x, 7.0f) << "a rejected conversion wrote output";
}

TEST(SafetensorsCorrupt, TruncationAtEveryOffsetIsAnError) {
  std::mt19937_64 rng(test::test_seed());
  const auto bytes = build_st(sample_tensors(rng));
  TempFile f("truncated.safetensors", bytes);
  size_t errors = 0;
  for (size_t cut = bytes.size(); cut-- > 0;) {
    std::filesystem::resize_file(f.path(), cut);
    try {
      SafetensorsFile st(f.path());
      ADD_FAILURE() << "a file cut at " << cut << " of " << bytes.size() << " opened";
    } catch (const Error& e) {
      ++errors;
      EXPECT_TRUE(contains(e.what(), f.path())) << e.what();
    }
  }
  EXPECT_EQ(errors, bytes.size());
}

TEST(SafetensorsCorrupt, RejectsBadHeaderLengths) {
  for (size_t n = 0; n < 8; ++n) {
    // Not even room for the length.
    EXPECT_TRUE(contains(open_error(std::vector<uint8_t>(n, '{')), "truncated")) << n;
  }
  const std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  for (uint64_t len :
       {uint64_t{header.size() + 5}, uint64_t{1} << 40, ~uint64_t{0}, uint64_t{200} << 20}) {
    const std::string msg = open_error(st_file(header, {1, 2, 3, 4}, len));
    EXPECT_TRUE(contains(msg, "header length")) << msg;
  }
  // Too short: the JSON is cut off.
  EXPECT_TRUE(contains(open_error(st_file(header, {1, 2, 3, 4}, header.size() - 3)), "JSON"));
  EXPECT_TRUE(contains(open_error(st_file(header, {}, 0)), "JSON"));
}

TEST(SafetensorsCorrupt, RefusesDeepNestingWhileParsing) {
  // A header of a million '[' used to be built into a million nested arrays (~70 bytes each; the
  // 100 MB a header may have would take gigabytes) before the parser found it was not JSON. It is
  // now refused at the 17th level, while parsing.
  const std::string msg = open_error(std::string(1 << 20, '['));
  EXPECT_TRUE(contains(msg, "nests deeper than 16 levels")) << msg;
  // Real headers (three levels) still open.
  std::mt19937_64 rng(test::test_seed());
  const std::vector<uint8_t> bytes = build_st(sample_tensors(rng));
  EXPECT_NO_THROW(SafetensorsFile(bytes, "ok.safetensors"));
}

TEST(SafetensorsCorrupt, RejectsMalformedHeaders) {
  const std::vector<uint8_t> data(64, 0x3c);
  const std::pair<std::string, std::string> cases[] = {
      {R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})", "JSON"},
      {R"(not json at all)", "JSON"},
      {R"([1, 2, 3])", "not a JSON object"},
      {R"("a string")", "not a JSON object"},
      {R"({"w": 3})", "'w'"},
      {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "lacks"},
      {R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", "lacks"},
      {R"({"w": {"dtype": "F32", "shape": [1]}})", "lacks"},
      {R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}})", "dtype"},
      {R"({"w": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", "F8_E4M3"},
      {R"({"w": {"dtype": "float32", "shape": [1], "data_offsets": [0, 4]}})", "float32"},
      {R"({"w": {"dtype": "F32", "shape": 1, "data_offsets": [0, 4]}})", "shape"},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "dimension"},
      {R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})", "dimension"},
      {R"({"w": {"dtype": "F32", "shape": ["1"], "data_offsets": [0, 4]}})", "dimension"},
      {R"({"w": {"dtype": "F32", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 4]}})", "shape"},
      {R"({"w": {"dtype": "F32", "shape": [1099511627777], "data_offsets": [0, 4]}})", "dimension"},
      {R"({"w": {"dtype": "F32", "shape": [1048576, 1048576, 1048576], "data_offsets": [0, 4]}})",
       "impossibly large"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", "outside"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [64, 68]}})", "outside"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551615]}})",
       "outside"},
      {R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "need 12"},
      {R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 24]}})", "need 12"},
      {R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [0, 4]}})", "need 0"},
  };
  for (const auto& [header, what] : cases) {
    const std::string msg = open_error(header, data);
    EXPECT_TRUE(contains(msg, what)) << header << "\n -> " << msg;
  }
}

// Writes `tensors` split over shards named by the index and returns the expected tensor file of
// each name.
void write_sharded(const TempDir& dir, const std::vector<std::vector<StSpec>>& shards,
                   std::map<std::string, std::string>* file_of) {
  nlohmann::json index;
  index["metadata"] = {{"total_size", 0}};
  index["weight_map"] = nlohmann::json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string name = "model-0000" + std::to_string(s + 1) + "-of-0000" +
                             std::to_string(shards.size()) + ".safetensors";
    dir.write(name, build_st(shards[s]));
    for (const auto& t : shards[s]) {
      index["weight_map"][t.name] = name;
      (*file_of)[t.name] = dir.file(name);
    }
  }
  dir.write("model.safetensors.index.json", index.dump(2));
}

TEST(SafetensorsModel, ReadsASingleFileFolder) {
  std::mt19937_64 rng(test::test_seed());
  const auto tensors = sample_tensors(rng);
  TempDir dir("single");
  dir.write("model.safetensors", build_st(tensors));
  SafetensorsModel m(dir.path());
  std::vector<std::string> want_names;
  for (const auto& t : tensors) want_names.push_back(t.name);
  std::sort(want_names.begin(), want_names.end());
  EXPECT_EQ(m.names(), want_names);
  for (const auto& t : tensors) {
    ASSERT_NE(m.find(t.name), nullptr) << t.name;
    EXPECT_EQ(&m.get(t.name), m.find(t.name));
    expect_tensor(m.get(t.name), t, dir.file("model.safetensors"));
  }
  EXPECT_EQ(m.find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  try {
    m.get("model.layers.0.self_attn.q_proj.weight");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), dir.path())) << e.what();
    EXPECT_TRUE(contains(e.what(), "model.layers.0.self_attn.q_proj.weight")) << e.what();
  }
}

TEST(SafetensorsModel, ReadsShardsNamedByTheIndex) {
  std::mt19937_64 rng(test::test_seed());
  std::vector<std::vector<StSpec>> shards(3);
  const char* dtypes[] = {"F32", "F16", "BF16"};
  const int n = 4 + static_cast<int>(rng() % 10);
  for (int i = 0; i < n; ++i) {
    const std::vector<int64_t> shape = {1 + static_cast<int64_t>(rng() % 13),
                                        1 + static_cast<int64_t>(rng() % 7)};
    shards[i % 3].push_back(
        random_st(rng, "model.layers." + std::to_string(i) + ".weight", dtypes[rng() % 3], shape));
  }
  TempDir dir("sharded");
  std::map<std::string, std::string> file_of;
  write_sharded(dir, shards, &file_of);
  // A stray single file next to an index is not part of the model: the index decides.
  dir.write("model.safetensors", build_st({random_st(rng, "stray", "F32", {2})}));
  SafetensorsModel m(dir.path());
  EXPECT_EQ(m.names().size(), static_cast<size_t>(n));
  EXPECT_EQ(m.find("stray"), nullptr);
  for (const auto& shard : shards) {
    for (const auto& t : shard) expect_tensor(m.get(t.name), t, file_of.at(t.name));
  }
}

// Opens `dir` as a model expecting an Error; returns its message.
std::string model_error(const TempDir& dir) {
  try {
    SafetensorsModel m(dir.path());
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "the folder opened without error";
  return {};
}

TEST(SafetensorsModel, RejectsBadFolders) {
  std::mt19937_64 rng(test::test_seed());
  {
    TempDir dir("empty");
    const std::string msg = model_error(dir);
    EXPECT_TRUE(contains(msg, dir.path()) && contains(msg, "model.safetensors")) << msg;
  }
  {
    TempDir dir("gone");
    const std::string missing = dir.file("no-such-folder");
    try {
      SafetensorsModel m(missing);
      ADD_FAILURE() << "opened a missing folder";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), missing)) << e.what();
    }
  }
  {
    TempDir dir("corrupt-single");
    dir.write("model.safetensors", std::string("\x05\0\0\0\0\0\0\0{}", 10));  // length 5 > 2
    const std::string msg = model_error(dir);
    EXPECT_TRUE(contains(msg, dir.file("model.safetensors"))) << msg;
  }
  const std::pair<std::string, std::string> bad_indexes[] = {
      {"{ not json", "not valid JSON"},
      {R"({"weight_map": )" + std::string(100, '['), "nests deeper"},
      {R"({"metadata": {}})", "weight_map"},
      {R"({"weight_map": ["a"]})", "weight_map"},
      {R"({"weight_map": {"a": 3}})", "'a'"},
      {R"({"weight_map": {"a": "../model.safetensors"}})", "plain file name"},
      {R"({"weight_map": {"a": "sub/model.safetensors"}})", "plain file name"},
      {R"({"weight_map": {"a": "/etc/passwd"}})", "plain file name"},
      {R"({"weight_map": {"a": ".."}})", "plain file name"},
  };
  for (const auto& [index, what] : bad_indexes) {
    TempDir dir("bad-index");
    dir.write("model.safetensors", build_st({random_st(rng, "a", "F32", {2})}));
    std::filesystem::create_directory(dir.file("sub"));
    dir.write("sub/model.safetensors", build_st({random_st(rng, "a", "F32", {2})}));
    dir.write("model.safetensors.index.json", index);
    const std::string msg = model_error(dir);
    EXPECT_TRUE(contains(msg, dir.file("model.safetensors.index.json"))) << msg;
    EXPECT_TRUE(contains(msg, what)) << index << "\n -> " << msg;
  }
  for (const char* shard : {"model-00002-of-00002.safetensors", ".", ""}) {
    // A shard the index names that is not a readable file.
    TempDir dir("missing-shard");
    std::map<std::string, std::string> file_of;
    write_sharded(dir, {{random_st(rng, "a", "F32", {2})}}, &file_of);
    nlohmann::json index =
        nlohmann::json::parse(read_text_file(dir.file("model.safetensors.index.json")));
    index["weight_map"]["b"] = shard;
    dir.write("model.safetensors.index.json", index.dump());
    const std::string msg = model_error(dir);
    EXPECT_TRUE(contains(msg, dir.file(shard))) << msg;
  }
  {
    // The index maps the tensor to one shard, but another shard the index names holds it too.
    TempDir dir("twice");
    dir.write("a.safetensors", build_st({random_st(rng, "model.norm.weight", "F32", {2})}));
    dir.write("b.safetensors", build_st({random_st(rng, "x", "F32", {1}),
                                         random_st(rng, "model.norm.weight", "F16", {2})}));
    dir.write("model.safetensors.index.json",
              R"({"weight_map": {"model.norm.weight": "a.safetensors", "x": "b.safetensors"}})");
    const std::string msg = model_error(dir);
    EXPECT_TRUE(contains(msg, "model.norm.weight") && contains(msg, "more than one shard")) << msg;
    EXPECT_TRUE(contains(msg, dir.path())) << msg;
  }
}

// A folder path the OS refuses to look at (here: a name longer than NAME_MAX) must be an Error
// naming it. Today SafetensorsModel calls the throwing std::filesystem::exists, so a
// std::filesystem::filesystem_error escapes instead (also for EACCES). Disabled until
// safetensors.cpp uses the error_code overloads (see the report with the proposed fix).
TEST(SafetensorsModel, InaccessibleFolderIsAnError) {
  TempDir dir("long");
  const std::string folder = dir.file(std::string(300, 'm'));
  try {
    SafetensorsModel m(folder);
    ADD_FAILURE() << "opened";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), folder)) << e.what();
  }
}

}  // namespace
}  // namespace lserve
