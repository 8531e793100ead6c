#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/byte_reader.h"
#include "core/dtype.h"
#include "core/error.h"

namespace lserve {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// Headers and index files nest three levels; a hostile 100 MB header of '[' would otherwise become
// a hundred million nested arrays (gigabytes of memory) before it is refused.
constexpr int kMaxJsonDepth = 16;

// Parses JSON text, refusing nesting deeper than kMaxJsonDepth while parsing. `what` names the
// text in errors.
nlohmann::json parse_json(const char* begin, const char* end, const std::string& what) {
  auto depth_limit = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    LSERVE_CHECK(depth <= kMaxJsonDepth, "{} nests deeper than {} levels", what, kMaxJsonDepth);
    return true;
  };
  try {
    return nlohmann::json::parse(begin, end, depth_limit);
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", what, e.what());
  }
}

struct DTypeInfo {
  std::string_view name;
  StDType dtype;
  size_t size;
};

constexpr DTypeInfo kDTypes[] = {
    {"F32", StDType::F32, 4},   {"F16", StDType::F16, 2}, {"BF16", StDType::BF16, 2},
    {"F64", StDType::F64, 8},   {"I64", StDType::I64, 8}, {"I32", StDType::I32, 4},
    {"I16", StDType::I16, 2},   {"I8", StDType::I8, 1},   {"U8", StDType::U8, 1},
    {"BOOL", StDType::BOOL, 1},
};

const DTypeInfo* find_dtype(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

}  // namespace

std::string_view st_dtype_name(StDType t) {
  for (const auto& d : kDTypes) {
    if (d.dtype == t) return d.name;
  }
  return "?";
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)), path_(path), bytes_(file_->bytes()) {
  parse();
}

SafetensorsFile::SafetensorsFile(std::span<const uint8_t> bytes, std::string name)
    : path_(std::move(name)), bytes_(bytes) {
  parse();
}

void SafetensorsFile::parse() {
  const std::string& path = path_;
  ByteReader r(bytes_, path);
  const uint64_t header_len = r.read<uint64_t>("header length");
  LSERVE_CHECK(header_len <= kMaxHeaderBytes && header_len <= r.remaining(),
               "{}: header length {} is impossible (file has {} bytes)", path, header_len,
               bytes_.size());
  const auto* hp = reinterpret_cast<const char*>(bytes_.data() + 8);
  const nlohmann::json header = parse_json(hp, hp + header_len, path + ": header");
  LSERVE_CHECK(header.is_object(), "{}: header is not a JSON object", path);
  const uint8_t* data = bytes_.data() + 8 + header_len;
  const uint64_t data_size = bytes_.size() - 8 - header_len;

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    LSERVE_CHECK(info.is_object() && info.contains("dtype") && info.contains("shape") &&
                     info.contains("data_offsets"),
                 "{}: tensor '{}' lacks dtype, shape or data_offsets", path, name);
    LSERVE_CHECK(info["dtype"].is_string(), "{}: tensor '{}' dtype is not a string", path, name);
    const DTypeInfo* dt = find_dtype(info["dtype"].get<std::string>());
    LSERVE_CHECK(dt != nullptr, "{}: tensor '{}' has unsupported dtype '{}'", path, name,
                 info["dtype"].get<std::string>());
    StTensor t;
    t.name = name;
    t.dtype = dt->dtype;
    t.file = path;
    t.n_elements = 1;
    LSERVE_CHECK(info["shape"].is_array() && info["shape"].size() <= 8,
                 "{}: tensor '{}' shape is not an array of at most 8 dimensions", path, name);
    for (const auto& d : info["shape"]) {
      LSERVE_CHECK(d.is_number_unsigned() && d.get<uint64_t>() <= (1ull << 40),
                   "{}: tensor '{}' has an invalid dimension {}", path, name, d.dump());
      const auto dim = static_cast<int64_t>(d.get<uint64_t>());
      LSERVE_CHECK(dim == 0 || t.n_elements <= (int64_t{1} << 48) / dim,
                   "{}: tensor '{}' is impossibly large", path, name);
      t.shape.push_back(dim);
      t.n_elements *= dim;
    }
    const auto& off = info["data_offsets"];
    LSERVE_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                     off[1].is_number_unsigned(),
                 "{}: tensor '{}' data_offsets must be two unsigned integers", path, name);
    const auto begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    LSERVE_CHECK(begin <= end && end <= data_size,
                 "{}: tensor '{}' data [{}, {}) lies outside the {}-byte data section; the file is "
                 "truncated or corrupted",
                 path, name, begin, end, data_size);
    t.n_bytes = end - begin;
    LSERVE_CHECK(t.n_bytes == static_cast<uint64_t>(t.n_elements) * dt->size,
                 "{}: tensor '{}' has {} bytes but its shape and dtype need {}", path, name,
                 t.n_bytes, static_cast<uint64_t>(t.n_elements) * dt->size);
    t.data = data + begin;
    tensors_.emplace(name, std::move(t));
  }
}

SafetensorsModel::SafetensorsModel(const std::string& folder) : folder_(folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  const fs::path index = dir / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  // The error_code overloads: a path the OS refuses (EACCES, ENAMETOOLONG) must be an Error.
  const auto exists = [](const fs::path& p) {
    std::error_code ec;
    const bool found = fs::exists(p, ec);
    LSERVE_CHECK(!ec, "cannot access '{}': {}", p.string(), ec.message());
    return found;
  };
  if (exists(index)) {
    const std::string text = read_text_file(index.string());
    nlohmann::json j = parse_json(text.data(), text.data() + text.size(), index.string());
    LSERVE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                 "{}: has no 'weight_map' object", index.string());
    for (const auto& [name, file] : j["weight_map"].items()) {
      LSERVE_CHECK(file.is_string(), "{}: weight_map entry '{}' is not a file name", index.string(),
                   name);
      const auto f = file.get<std::string>();
      LSERVE_CHECK(f.find('/') == std::string::npos && f != "..",
                   "{}: shard name '{}' must be a plain file name", index.string(), f);
      if (std::find(shard_names.begin(), shard_names.end(), f) == shard_names.end()) {
        shard_names.push_back(f);
      }
    }
  } else if (exists(dir / "model.safetensors")) {
    shard_names.push_back("model.safetensors");
  } else {
    fail("{}: no model.safetensors or model.safetensors.index.json", folder);
  }
  for (const auto& name : shard_names) {
    files_.push_back(std::make_unique<SafetensorsFile>((dir / name).string()));
    for (const auto& [tname, t] : files_.back()->tensors()) {
      LSERVE_CHECK(index_.count(tname) == 0, "{}: tensor '{}' appears in more than one shard",
                   folder, tname);
      index_[tname] = &t;
    }
  }
}

const StTensor* SafetensorsModel::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const StTensor& SafetensorsModel::get(const std::string& name) const {
  const auto* t = find(name);
  LSERVE_CHECK(t != nullptr, "{}: tensor '{}' is missing", folder_, name);
  return *t;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  for (const auto& [name, t] : index_) out.push_back(name);
  return out;
}

void st_to_f32(const StTensor& t, float* dst) {
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case StDType::F32:
      // An empty tensor's destination may be null (an empty vector's data()), and memcpy with a
      // null pointer is undefined even for 0 bytes.
      if (t.n_bytes > 0) std::memcpy(dst, p, t.n_bytes);
      return;
    case StDType::F16:
      for (int64_t i = 0; i < t.n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case StDType::BF16:
      for (int64_t i = 0; i < t.n_elements; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case StDType::F64:
      for (int64_t i = 0; i < t.n_elements; ++i) {
        double d;
        std::memcpy(&d, p + 8 * i, 8);
        dst[i] = static_cast<float>(d);
      }
      return;
    default:
      break;
  }
  fail("{}: tensor '{}' has dtype {}, which is not a float type", t.file, t.name,
       st_dtype_name(t.dtype));
}

}  // namespace lserve
