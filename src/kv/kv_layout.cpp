#include "kv/kv_layout.h"

namespace lserve {

int64_t KvPoolLayout::page_bytes_all_layers(int elem_bytes) const {
  int64_t total = 0;
  for (size_t l = 0; l < heads_per_layer.size(); ++l) total += 2 * page_elems(static_cast<int>(l));
  return total * elem_bytes;
}

HeadMap HeadMap::all_retrieval(int n_layers, int n_kv_heads) {
  return from_flags(std::vector<std::vector<bool>>(n_layers, std::vector<bool>(n_kv_heads, true)));
}

HeadMap HeadMap::from_flags(const std::vector<std::vector<bool>>& retrieval) {
  HeadMap m;
  for (const auto& layer : retrieval) {
    std::vector<HeadClass> cls;
    std::vector<int> slot;
    int n_ret = 0, n_str = 0;
    for (bool r : layer) {
      cls.push_back(r ? HeadClass::kRetrieval : HeadClass::kStreaming);
      slot.push_back(r ? n_ret++ : n_str++);
    }
    m.cls.push_back(std::move(cls));
    m.slot.push_back(std::move(slot));
  }
  return m;
}

int HeadMap::count(int layer, HeadClass c) const {
  int n = 0;
  for (auto x : cls[layer]) n += x == c;
  return n;
}

}  // namespace lserve
