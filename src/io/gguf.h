// GGUF v2/v3 reader (the llama.cpp model format): header, typed metadata, tensor infos and the
// aligned data section. The file is memory-mapped; every count, length and offset is checked
// against the file size before it is used, so a hostile file fails with an Error, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "core/mapped_file.h"
#include "io/ggml_type.h"

namespace lserve {

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType t);

struct GgufValue;
struct GgufArray {
  GgufValueType elem_type = GgufValueType::U8;
  std::vector<GgufValue> items;
};

// Integers are widened to (u)int64, floats to double; the original type is kept for messages.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::shared_ptr<GgufArray>> value;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the innermost (contiguous) dimension
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // relative to the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;  // into the mapped file, valid while the GgufFile lives
};

class GgufFile {
 public:
  // Opens and validates `path`; throws Error naming the file and the field that was wrong.
  explicit GgufFile(const std::string& path);
  // Parses a GGUF image already in memory (the fuzz targets use this); `name` stands for the path
  // in messages. The bytes must outlive the GgufFile: tensor data points into them.
  GgufFile(std::span<const uint8_t> bytes, std::string name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }

  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }

  // Typed getters: throw Error when the key is missing or holds an incompatible type.
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;   // any integer type
  double get_float(const std::string& key) const;  // any float or integer type
  bool get_bool(const std::string& key) const;
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;

  std::optional<std::string> opt_string(const std::string& key) const;
  std::optional<int64_t> opt_int(const std::string& key) const;
  std::optional<double> opt_float(const std::string& key) const;
  std::optional<bool> opt_bool(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor(const std::string& name) const;  // throws when missing

 private:
  void parse();

  std::unique_ptr<MappedFile> file_;  // null when parsing bytes owned by the caller
  std::string path_;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace lserve
