#include "kv/kv_layout.h"

namespace lserve {

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
