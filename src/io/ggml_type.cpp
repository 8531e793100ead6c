#include "io/ggml_type.h"

namespace lserve {
namespace {

struct Entry {
  uint32_t id;
  GgmlTypeTraits traits;
};

// Block geometry from the GGUF specification; K-quants use super-blocks of 256 elements.
constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4, true}},       {1, {"F16", 1, 2, true}},        {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},    {6, {"Q5_0", 32, 22, true}},     {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},    {9, {"Q8_1", 32, 36, false}},    {10, {"Q2_K", 256, 84, true}},
    {11, {"Q3_K", 256, 110, true}}, {12, {"Q4_K", 256, 144, true}},  {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}}, {15, {"Q8_K", 256, 292, false}}, {30, {"BF16", 1, 2, true}},
};

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type_id) {
  for (const auto& e : kTypes) {
    if (e.id == type_id) return &e.traits;
  }
  return nullptr;
}

std::string_view ggml_type_name(GgmlType t) {
  const auto* tr = ggml_type_traits(static_cast<uint32_t>(t));
  return tr ? tr->name : "unknown";
}

}  // namespace lserve
