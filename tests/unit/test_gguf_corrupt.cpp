// GGUF reader, corrupt files: every kind of corruption ends in an lserve::Error that names the
// file and the field, never in a crash, a huge allocation or a file that silently opens.
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

TEST(GgufCorrupt, MissingEmptyOrDirectoryPathIsAnError) {
  const std::string absent = TempFile::unique_path("absent.gguf");
  const TempFile empty("empty.gguf", std::vector<uint8_t>{});
  const TempDir dir("dir.gguf");
  const std::pair<std::string, std::string> cases[] = {
      {absent, "cannot open"}, {empty.path(), "magic"}, {dir.path(), "regular file"}};
  for (const auto& [path, what] : cases) {
    try {
      GgufFile g(path);
      ADD_FAILURE() << path << " opened";
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), path)) << e.what();
      EXPECT_TRUE(contains(e.what(), what)) << e.what();
    }
  }
}

TEST(GgufCorrupt, TruncationAtEveryOffsetIsAnError) {
  std::mt19937_64 rng(test::test_seed());
  const Sample s = make_sample(rng, 3);
  const GgufImage img = test::build_gguf(s.spec);
  ASSERT_LT(img.data_end, img.bytes.size()) << "the sample should end with padding";
  TempFile f("truncated.gguf", img.bytes);
  // Shrinking one file step by step costs a syscall per cut instead of a rewrite.
  size_t errors = 0, opened = 0;
  for (size_t cut = img.bytes.size(); cut-- > 0;) {
    std::filesystem::resize_file(f.path(), cut);
    ASSERT_EQ(std::filesystem::file_size(f.path()), cut);
    if (cut < img.data_end) {
      try {
        GgufFile g(f.path());
        ADD_FAILURE() << "a file cut at " << cut << " of " << img.bytes.size() << " opened";
      } catch (const Error& e) {
        ++errors;
        const std::string msg = e.what();
        EXPECT_TRUE(contains(msg, f.path())) << msg;
        // Either the cursor ran out, or a count/length was found impossible for the size left.
        EXPECT_TRUE(contains(msg, "truncated") || contains(msg, "impossible") ||
                    contains(msg, "remain"))
            << "cut " << cut << ": " << msg;
      }
    } else {
      // Only the padding after the last tensor is missing: nothing the reader needs.
      GgufFile g(f.path());
      expect_tensors(g, s.spec, img);
      ++opened;
    }
  }
  EXPECT_EQ(errors, img.data_end);
  EXPECT_EQ(opened, img.bytes.size() - img.data_end);
}

TEST(GgufCorrupt, TruncationMessageNamesTheField) {
  GgufSpec spec;
  spec.kvs = {{"general.name", gguf_str("a model name")}};
  const GgufImage img = test::build_gguf(spec);
  const std::vector<uint8_t> cut(img.bytes.begin(), img.bytes.begin() + 24 + 8 + 12 + 4 + 8 + 3);
  const std::string msg = open_error(cut);
  EXPECT_TRUE(contains(msg, "truncated")) << msg;
  EXPECT_TRUE(contains(msg, "general.name")) << msg;
}

TEST(GgufCorrupt, RejectsBadMagicAndVersion) {
  GgufSpec spec;
  spec.magic = 0x4c4d4747;  // "GGML": the pre-GGUF format
  EXPECT_TRUE(contains(open_error(spec), "magic"));
  spec.magic = 0x46554747;
  // v1 used 32-bit counts; 0x03000000 is a big-endian v3 file read little-endian.
  for (uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    spec.version = version;
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "version " + std::to_string(version))) << msg;
  }
}

TEST(GgufCorrupt, AbsurdCountsAreRejectedBeforeAllocating) {
  // Counts like these would ask for exabytes if reserved; the reader must compare them with the
  // file size first. A bad_alloc or length_error here escapes open_error and fails the test.
  for (uint64_t n : {uint64_t{1} << 60, ~uint64_t{0}, uint64_t{1} << 32}) {
    GgufSpec spec;
    spec.n_tensors = n;
    EXPECT_TRUE(contains(open_error(spec), "tensor count")) << n;
    spec.n_tensors.reset();
    spec.n_kv = n;
    EXPECT_TRUE(contains(open_error(spec), "metadata count")) << n;
  }
}

TEST(GgufCorrupt, RejectsLengthsBeyondTheFile) {
  {
    Bytes b;  // a key whose length runs past the file
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
    b.put<uint64_t>(1000).raw(std::vector<uint8_t>(40, 'k'));
    const std::string msg = open_error(b.data());
    EXPECT_TRUE(contains(msg, "key of metadata #0")) << msg;
  }
  for (uint64_t len : {uint64_t{100}, uint64_t{1} << 40, ~uint64_t{0}}) {
    Bytes b;  // a string value whose length runs past the file
    b.put<uint32_t>(0x46554747).put<uint32_t>(3).put<uint64_t>(0).put<uint64_t>(1);
    b.str("tokenizer.chat_template").put<uint32_t>(kGgufString).put<uint64_t>(len);
    b.raw(std::vector<uint8_t>(50, 'x'));
    const std::string msg = open_error(b.data());
    EXPECT_TRUE(contains(msg, "tokenizer.chat_template")) << msg;
  }
  // (Not a count of 4: the reader would take the 4th element from the padding before the data.)
  for (uint64_t count : {uint64_t{100}, uint64_t{1} << 40, uint64_t{1} << 60, ~uint64_t{0}}) {
    GgufSpec spec;  // an array that claims more elements than are written
    spec.kvs = {{"tokenizer.ggml.scores",
                 gguf_array(kGgufF32, {gguf_f32(1), gguf_f32(2), gguf_f32(3)}, count)}};
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "tokenizer.ggml.scores")) << msg;
  }
  {
    GgufSpec spec;  // an array of strings whose second string runs past the file
    Bytes payload;
    payload.put<uint32_t>(kGgufString).put<uint64_t>(2).str("ok").put<uint64_t>(1u << 20);
    spec.kvs = {{"tokenizer.ggml.tokens", GgufVal{kGgufArray, payload.data()}}};
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "tokenizer.ggml.tokens")) << msg;
  }
}

TEST(GgufCorrupt, RejectsUnknownValueTypes) {
  for (uint32_t type : {13u, 100u, 0xffffffffu}) {
    GgufSpec spec;
    spec.kvs = {{"k.scalar", GgufVal{type, {1, 2, 3, 4, 5, 6, 7, 8}}}};
    std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "k.scalar") && contains(msg, std::to_string(type))) << msg;
    spec.kvs = {{"k.array", gguf_array(type, {gguf_u32(1)})}};
    msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "k.array") && contains(msg, std::to_string(type))) << msg;
  }
  GgufSpec spec;
  spec.kvs = {{"k.bool", GgufVal{kGgufBool, {2}}}};  // a bool is 0 or 1
  EXPECT_TRUE(contains(open_error(spec), "k.bool"));
}

TEST(GgufCorrupt, RejectsDuplicateKeysAndTensors) {
  std::mt19937_64 rng(test::test_seed());
  GgufSpec spec;
  spec.kvs = {{"llama.block_count", gguf_u32(2)}, {"llama.block_count", gguf_u32(3)}};
  std::string msg = open_error(spec);
  EXPECT_TRUE(contains(msg, "llama.block_count") && contains(msg, "twice")) << msg;
  spec.kvs.clear();
  spec.tensors = {random_tensor(rng, "blk.0.x", 0, {3}), random_tensor(rng, "blk.0.x", 0, {3})};
  msg = open_error(spec);
  EXPECT_TRUE(contains(msg, "blk.0.x") && contains(msg, "twice")) << msg;
}

TEST(GgufCorrupt, RejectsBadTensorShapes) {
  std::mt19937_64 rng(test::test_seed());
  auto expect_rejected = [&](GgufTensorSpec t, const std::string& what) {
    GgufSpec spec;
    t.name = "blk.3.weird";
    spec.tensors = {std::move(t)};
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "blk.3.weird")) << msg;
    EXPECT_TRUE(contains(msg, what)) << msg;
  };
  GgufTensorSpec t = random_tensor(rng, "", 0, {4});
  t.dims = {};
  expect_rejected(t, "0 dimensions");
  t.dims = {1, 1, 1, 1, 1};
  expect_rejected(t, "5 dimensions");
  t.dims = {4, 0};
  expect_rejected(t, "dimension 1 = 0");
  t.dims = {uint64_t{1} << 41};
  expect_rejected(t, "dimension 0");
  // Each dimension is plausible, the product is not (it would overflow n_bytes).
  t.dims = {uint64_t{1} << 40, uint64_t{1} << 40};
  expect_rejected(t, "impossibly large");
  // Quantized rows must hold whole blocks: a 48-wide Q4_0 row, and a Q6_K tensor whose element
  // count is a whole number of blocks but whose rows are not.
  expect_rejected(random_tensor(rng, "", 2, {48, 2}), "not a multiple");
  expect_rejected(random_tensor(rng, "", 14, {128, 2}), "not a multiple");
}

TEST(GgufCorrupt, RejectsUnknownGgmlTypes) {
  std::mt19937_64 rng(test::test_seed());
  // 4 and 5 were Q4_2/Q4_3, removed from ggml; 31 and beyond are unknown to lserve.
  for (uint32_t type : {4u, 5u, 31u, 1000u, 0xffffffffu}) {
    GgufSpec spec;
    spec.tensors = {random_tensor(rng, "t.unknown", 0, {32})};
    spec.tensors[0].type = type;
    const std::string msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "t.unknown") && contains(msg, "type " + std::to_string(type))) << msg;
  }
}

TEST(GgufCorrupt, RejectsMisalignedOrOutOfFileTensorData) {
  std::mt19937_64 rng(test::test_seed());
  GgufSpec spec;
  spec.tensors = {random_tensor(rng, "first", 0, {8}), random_tensor(rng, "second", 0, {9})};
  spec.tensors[1].offset = 48;  // not a multiple of 32
  std::string msg = open_error(spec);
  EXPECT_TRUE(contains(msg, "second") && contains(msg, "aligned")) << msg;

  spec.tensors[1].offset.reset();
  const GgufImage good = test::build_gguf(spec);
  for (uint64_t offset : {uint64_t{64}, uint64_t{1} << 40, ~uint64_t{0} / 32 * 32}) {
    spec.tensors[1].offset = offset;  // past the end, or far past it
    msg = open_error(spec);
    EXPECT_TRUE(contains(msg, "second") && contains(msg, "past the end")) << msg;
  }
  // The last tensor's bytes cut short by one byte.
  std::vector<uint8_t> bytes = good.bytes;
  bytes.resize(good.data_end - 1);
  msg = open_error(bytes);
  EXPECT_TRUE(contains(msg, "second") && contains(msg, "past the end")) << msg;
}

TEST(GgufCorrupt, RandomByteCorruptionNeverCrashes) {
  // Overwrites random bytes of the header (the part the reader parses); whatever happens must be
  // an Error or a file whose tensors all lie inside the mapping. ASan builds check the "never
  // reads out of bounds" half of that.
  std::mt19937_64 rng(test::test_seed());
  const Sample s = make_sample(rng, 3);
  const GgufImage img = test::build_gguf(s.spec);
  TempFile f("fuzz.gguf");
  int opened = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = img.bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % img.infos_end;
      // Small values and all-ones are the interesting ones for counts, lengths and type ids.
      switch (rng() % 3) {
        case 0:
          bytes[at] = static_cast<uint8_t>(rng());
          break;
        case 1:
          bytes[at] = static_cast<uint8_t>(rng() % 16);
          break;
        default:
          bytes[at] = 0xff;
          break;
      }
    }
    f.write(bytes);
    try {
      GgufFile g(f.path());
      ++opened;
      const uint8_t* data_start = nullptr;
      for (const auto& t : g.tensors()) {
        // Every tensor lies at its offset from one data section start, inside the file; touching
        // each byte faults if the reader let a pointer escape the mapping.
        if (data_start == nullptr) data_start = t.data - t.offset;
        EXPECT_EQ(t.data - t.offset, data_start) << t.name;
        ASSERT_LE(t.offset + t.n_bytes, bytes.size()) << t.name;
        volatile uint8_t sink = 0;
        for (uint64_t i = 0; i < t.n_bytes; ++i) sink = sink ^ t.data[i];
      }
    } catch (const Error&) {
    }
  }
  // Some corruptions (a changed value byte) are harmless; most are not. Both must occur, or the
  // fuzzing is not reaching the parser.
  EXPECT_GT(opened, 0);
  EXPECT_LT(opened, 3000);
}

}  // namespace
}  // namespace lserve
