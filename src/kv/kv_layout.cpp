#include "kv/kv_layout.h"

#include <algorithm>

#include "core/error.h"

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

void HeadMap::set_model_windows(const std::vector<int32_t>& windows) {
  if (windows.empty()) return;
  LSERVE_CHECK(windows.size() == cls.size(), "{} sliding windows for {} layers", windows.size(),
               cls.size());
  std::vector<std::vector<bool>> retrieval;
  for (size_t l = 0; l < cls.size(); ++l) {
    std::vector<bool> r;
    for (HeadClass c : cls[l]) r.push_back(windows[l] <= 0 && c == HeadClass::kRetrieval);
    retrieval.push_back(std::move(r));
  }
  *this = from_flags(retrieval);
  window = windows;
}

int32_t HeadMap::max_model_window() const {
  return window.empty() ? 0 : *std::max_element(window.begin(), window.end());
}

bool HeadMap::has_sparse_streaming() const {
  for (size_t l = 0; l < cls.size(); ++l) {
    if (model_window(static_cast<int>(l)) > 0) continue;
    for (HeadClass c : cls[l]) {
      if (c == HeadClass::kStreaming) return true;
    }
  }
  return false;
}

int HeadMap::count(int layer, HeadClass c) const {
  int n = 0;
  for (auto x : cls[layer]) n += x == c;
  return n;
}

}  // namespace lserve
