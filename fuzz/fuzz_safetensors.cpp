// Fuzz target: a safetensors file (8-byte header length, JSON header, data), parsed from memory as
// SafetensorsFile reads a mapped file. Every tensor's bytes are read and the float ones converted
// to f32 as the loader does, so a shape, dtype or offset the reader accepted wrongly is an ASan
// report.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "fuzz_common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lserve;
  std::unique_ptr<SafetensorsFile> file;
  if (!fuzz::refusals_are_errors([&] {
        file = std::make_unique<SafetensorsFile>(std::span(data, size), "fuzz.safetensors");
      })) {
    return 0;
  }
  std::vector<float> values;
  for (const auto& entry : file->tensors()) {
    const StTensor& t = entry.second;
    fuzz::touch(t.data, t.n_bytes);
    values.resize(static_cast<size_t>(t.n_elements));
    fuzz::refusals_are_errors([&] { st_to_f32(t, values.data()); });  // Error for integer dtypes
  }
  return 0;
}
