// Safetensors reader (Hugging Face weights): one file or a sharded set described by
// model.safetensors.index.json. Files are memory-mapped; header and offsets are validated.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace lserve {

enum class StDType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

struct StTensor {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;  // row-major, outermost first (as PyTorch)
  int64_t n_elements = 0;
  const uint8_t* data = nullptr;
  size_t n_bytes = 0;
  std::string file;  // which file holds it, for messages
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  // Parses a safetensors image already in memory (the fuzz targets use this); `name` stands for
  // the path in messages. The bytes must outlive the SafetensorsFile: tensor data points into them.
  SafetensorsFile(std::span<const uint8_t> bytes, std::string name);
  const std::map<std::string, StTensor>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }

 private:
  void parse();

  std::unique_ptr<MappedFile> file_;  // null when parsing bytes owned by the caller
  std::string path_;
  std::span<const uint8_t> bytes_;
  std::map<std::string, StTensor> tensors_;
};

// All tensors of a model folder: `model.safetensors`, or the shards named by
// `model.safetensors.index.json`.
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::string& folder);
  const StTensor* find(const std::string& name) const;
  const StTensor& get(const std::string& name) const;  // throws naming the folder when missing
  std::vector<std::string> names() const;

 private:
  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const StTensor*> index_;
};

std::string_view st_dtype_name(StDType t);

// Converts a floating-point safetensors tensor to f32; throws for non-float dtypes.
void st_to_f32(const StTensor& t, float* dst);

}  // namespace lserve
