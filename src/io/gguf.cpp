#include "io/gguf.h"

#include <fmt/format.h>

#include "core/byte_reader.h"
#include "core/error.h"

namespace lserve {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
// Limits that stop a hostile header from asking for absurd allocations before any data is read.
constexpr uint64_t kMaxKeyLength = 1u << 16;
constexpr uint64_t kMaxDims = 4;
// Each array element becomes a ~48-byte value in memory; real arrays (vocabularies, merges) have
// at most a few hundred thousand entries.
constexpr uint64_t kMaxArrayLength = 1u << 24;

size_t value_type_min_bytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64:
      return 8;
    case GgufValueType::STRING:
      return 8;
    case GgufValueType::ARRAY:
      return 12;
  }
  return 1;
}

GgufValue read_value(ByteReader& r, GgufValueType type, const std::string& key, int depth);

GgufValueType read_type(ByteReader& r, const std::string& key) {
  const uint32_t t = r.read<uint32_t>("type of metadata '" + key + "'");
  LSERVE_CHECK(t <= 12, "{}: metadata '{}' has unknown value type {} at offset {}", r.source(), key,
               t, r.offset() - 4);
  return static_cast<GgufValueType>(t);
}

GgufValue read_value(ByteReader& r, GgufValueType type, const std::string& key, int depth) {
  GgufValue v;
  v.type = type;
  const std::string field = "value of metadata '" + key + "'";
  switch (type) {
    case GgufValueType::U8:
      v.value = uint64_t{r.read<uint8_t>(field)};
      break;
    case GgufValueType::I8:
      v.value = int64_t{r.read<int8_t>(field)};
      break;
    case GgufValueType::U16:
      v.value = uint64_t{r.read<uint16_t>(field)};
      break;
    case GgufValueType::I16:
      v.value = int64_t{r.read<int16_t>(field)};
      break;
    case GgufValueType::U32:
      v.value = uint64_t{r.read<uint32_t>(field)};
      break;
    case GgufValueType::I32:
      v.value = int64_t{r.read<int32_t>(field)};
      break;
    case GgufValueType::U64:
      v.value = r.read<uint64_t>(field);
      break;
    case GgufValueType::I64:
      v.value = r.read<int64_t>(field);
      break;
    case GgufValueType::F32:
      v.value = double{r.read<float>(field)};
      break;
    case GgufValueType::F64:
      v.value = r.read<double>(field);
      break;
    case GgufValueType::BOOL: {
      const uint8_t b = r.read<uint8_t>(field);
      LSERVE_CHECK(b <= 1, "{}: metadata '{}' is a bool with value {}", r.source(), key, b);
      v.value = b == 1;
      break;
    }
    case GgufValueType::STRING:
      v.value = r.read_string(field);
      break;
    case GgufValueType::ARRAY: {
      LSERVE_CHECK(depth < 2, "{}: metadata '{}' nests arrays too deeply", r.source(), key);
      auto arr = std::make_shared<GgufArray>();
      arr->elem_type = read_type(r, key);
      const uint64_t n = r.read<uint64_t>("array length of metadata '" + key + "'");
      // Each element needs at least this many bytes, so a length beyond the file is caught
      // before reserving memory for it.
      const uint64_t min_bytes = value_type_min_bytes(arr->elem_type);
      LSERVE_CHECK(n <= r.remaining() / min_bytes,
                   "{}: metadata '{}' claims {} array elements but only {} bytes remain",
                   r.source(), key, n, r.remaining());
      LSERVE_CHECK(n <= kMaxArrayLength,
                   "{}: metadata '{}' has {} array elements, more than the "
                   "limit {}",
                   r.source(), key, n, kMaxArrayLength);
      arr->items.reserve(n);
      for (uint64_t i = 0; i < n; ++i)
        arr->items.push_back(read_value(r, arr->elem_type, key, depth + 1));
      v.value = std::move(arr);
      break;
    }
  }
  return v;
}

template <typename T>
const T* get_if_value(const GgufValue& v) {
  return std::get_if<T>(&v.value);
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                "i32", "f32", "bool", "string", "array",
                                                "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kNames) ? kNames[i] : "unknown";
}

GgufFile::GgufFile(const std::string& path)
    : file_(std::make_unique<MappedFile>(path)), path_(path), bytes_(file_->bytes()) {
  parse();
}

GgufFile::GgufFile(std::span<const uint8_t> bytes, std::string name)
    : path_(std::move(name)), bytes_(bytes) {
  parse();
}

void GgufFile::parse() {
  const std::string& path = path_;
  ByteReader r(bytes_, path);
  const uint32_t magic = r.read<uint32_t>("magic");
  LSERVE_CHECK(magic == kMagic, "{}: not a GGUF file (magic 0x{:08x}, expected 0x{:08x} 'GGUF')",
               path, magic, kMagic);
  version_ = r.read<uint32_t>("version");
  LSERVE_CHECK(version_ == 2 || version_ == 3, "{}: GGUF version {} is not supported (2 or 3)",
               path, version_);
  const uint64_t n_tensors = r.read<uint64_t>("tensor count");
  const uint64_t n_kv = r.read<uint64_t>("metadata count");
  // A key-value pair takes at least 12 bytes and a tensor info at least 24.
  LSERVE_CHECK(n_kv <= r.remaining() / 12, "{}: metadata count {} is impossible for a {}-byte file",
               path, n_kv, bytes_.size());
  LSERVE_CHECK(n_tensors <= r.remaining() / 24,
               "{}: tensor count {} is impossible for a {}-byte file", path, n_tensors,
               bytes_.size());

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.read_string(fmt::format("key of metadata #{}", i), kMaxKeyLength);
    const GgufValueType type = read_type(r, key);
    GgufValue value = read_value(r, type, key, 0);
    LSERVE_CHECK(metadata_.count(key) == 0, "{}: metadata key '{}' appears twice", path, key);
    metadata_.emplace(std::move(key), std::move(value));
  }

  if (const auto* a = find("general.alignment")) {
    const uint64_t* al = get_if_value<uint64_t>(*a);
    LSERVE_CHECK(al && *al > 0 && (*al & (*al - 1)) == 0 && *al <= 65536,
                 "{}: general.alignment must be a power of two <= 65536", path);
    alignment_ = *al;
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.read_string(fmt::format("name of tensor #{}", i), kMaxKeyLength);
    const uint32_t n_dims = r.read<uint32_t>("dimension count of tensor '" + t.name + "'");
    LSERVE_CHECK(n_dims >= 1 && n_dims <= kMaxDims, "{}: tensor '{}' has {} dimensions (1..{})",
                 path, t.name, n_dims, kMaxDims);
    t.n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = r.read<uint64_t>("dimensions of tensor '" + t.name + "'");
      LSERVE_CHECK(dim >= 1 && dim <= (1ull << 40), "{}: tensor '{}' has dimension {} = {}", path,
                   t.name, d, dim);
      LSERVE_CHECK(t.n_elements <= (1ull << 48) / dim, "{}: tensor '{}' is impossibly large", path,
                   t.name);
      t.n_elements *= dim;
      t.dims.push_back(dim);
    }
    const uint32_t type_id = r.read<uint32_t>("type of tensor '" + t.name + "'");
    const GgmlTypeTraits* traits = ggml_type_traits(type_id);
    LSERVE_CHECK(traits != nullptr, "{}: tensor '{}' has unknown ggml type {}", path, t.name,
                 type_id);
    t.type = static_cast<GgmlType>(type_id);
    LSERVE_CHECK(t.dims[0] % traits->block_size == 0,
                 "{}: tensor '{}' of type {} has row length {}, not a multiple of its block {}",
                 path, t.name, traits->name, t.dims[0], traits->block_size);
    t.n_bytes = t.n_elements / traits->block_size * traits->block_bytes;
    t.offset = r.read<uint64_t>("data offset of tensor '" + t.name + "'");
    LSERVE_CHECK(t.offset % alignment_ == 0, "{}: tensor '{}' offset {} is not aligned to {}", path,
                 t.name, t.offset, alignment_);
    LSERVE_CHECK(tensor_index_.count(t.name) == 0, "{}: tensor '{}' appears twice", path, t.name);
    tensor_index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  r.align_to(alignment_, "padding before the tensor data");
  const size_t data_start = r.offset();
  const uint64_t data_size = r.remaining();
  for (auto& t : tensors_) {
    LSERVE_CHECK(t.offset <= data_size && t.n_bytes <= data_size - t.offset,
                 "{}: tensor '{}' ({} bytes at data offset {}) extends past the end of the file "
                 "(data section is {} bytes); the file is truncated or corrupted",
                 path, t.name, t.n_bytes, t.offset, data_size);
    t.data = bytes_.data() + data_start + t.offset;
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v,
                             std::string_view expected) {
  fail("{}: metadata '{}' is {}, expected {}", path, key, gguf_value_type_name(v.type), expected);
}

std::optional<int64_t> as_int(const GgufValue& v) {
  if (const auto* u = get_if_value<uint64_t>(v)) {
    if (*u > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = get_if_value<int64_t>(v)) return *i;
  return std::nullopt;
}

std::optional<double> as_float(const GgufValue& v) {
  if (const auto* d = get_if_value<double>(v)) return *d;
  if (const auto* u = get_if_value<uint64_t>(v)) return static_cast<double>(*u);
  if (auto i = as_int(v)) return static_cast<double>(*i);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> GgufFile::opt_string(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  const auto* s = get_if_value<std::string>(*v);
  if (!s) wrong_type(path(), key, *v, "a string");
  return *s;
}

std::optional<int64_t> GgufFile::opt_int(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  auto i = as_int(*v);
  if (!i) wrong_type(path(), key, *v, "an integer");
  return i;
}

std::optional<double> GgufFile::opt_float(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  auto d = as_float(*v);
  if (!d) wrong_type(path(), key, *v, "a number");
  return d;
}

std::optional<bool> GgufFile::opt_bool(const std::string& key) const {
  const auto* v = find(key);
  if (!v) return std::nullopt;
  const auto* b = get_if_value<bool>(*v);
  if (!b) wrong_type(path(), key, *v, "a bool");
  return *b;
}

std::string GgufFile::get_string(const std::string& key) const {
  auto v = opt_string(key);
  LSERVE_CHECK(v.has_value(), "{}: required metadata '{}' is missing", path(), key);
  return *v;
}

int64_t GgufFile::get_int(const std::string& key) const {
  auto v = opt_int(key);
  LSERVE_CHECK(v.has_value(), "{}: required metadata '{}' is missing", path(), key);
  return *v;
}

double GgufFile::get_float(const std::string& key) const {
  auto v = opt_float(key);
  LSERVE_CHECK(v.has_value(), "{}: required metadata '{}' is missing", path(), key);
  return *v;
}

bool GgufFile::get_bool(const std::string& key) const {
  auto v = opt_bool(key);
  LSERVE_CHECK(v.has_value(), "{}: required metadata '{}' is missing", path(), key);
  return *v;
}

namespace {

const GgufArray& array_of(const GgufFile& f, const std::string& key) {
  const auto* v = f.find(key);
  LSERVE_CHECK(v != nullptr, "{}: required metadata '{}' is missing", f.path(), key);
  const auto* a = get_if_value<std::shared_ptr<GgufArray>>(*v);
  if (!a) wrong_type(f.path(), key, *v, "an array");
  return **a;
}

}  // namespace

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const auto& a = array_of(*this, key);
  std::vector<std::string> out;
  out.reserve(a.items.size());
  for (const auto& item : a.items) {
    const auto* s = get_if_value<std::string>(item);
    if (!s) wrong_type(path(), key, item, "an array of strings");
    out.push_back(*s);
  }
  return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const auto& a = array_of(*this, key);
  std::vector<int64_t> out;
  out.reserve(a.items.size());
  for (const auto& item : a.items) {
    auto i = as_int(item);
    if (!i) wrong_type(path(), key, item, "an array of integers");
    out.push_back(*i);
  }
  return out;
}

std::vector<double> GgufFile::get_float_array(const std::string& key) const {
  const auto& a = array_of(*this, key);
  std::vector<double> out;
  out.reserve(a.items.size());
  for (const auto& item : a.items) {
    auto d = as_float(item);
    if (!d) wrong_type(path(), key, item, "an array of numbers");
    out.push_back(*d);
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::tensor(const std::string& name) const {
  const auto* t = find_tensor(name);
  LSERVE_CHECK(t != nullptr, "{}: tensor '{}' is missing", path(), name);
  return *t;
}

}  // namespace lserve
