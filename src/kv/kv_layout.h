// Geometry of the paged KV cache. A page holds `page_size` consecutive tokens of one sequence for
// every KV head stored in its pool, in every layer: a page id names the same slot in all layers.
// Storage per layer and pool is [page][head][slot][head_dim] so one head's page is contiguous.
// Each retrieval page also keeps per-logical-page key bounds (kmin/kmax) for page selection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lserve {

// Which pool serves a KV head; streaming heads only keep sink + local tokens (two-way paging).
enum class HeadClass : uint8_t { kRetrieval, kStreaming };

struct KvPoolLayout {
  int num_pages = 0;
  int page_size = 0;  // P tokens
  int head_dim = 0;
  std::vector<int> heads_per_layer;  // KV heads of this class in each layer (may be 0)
};

// Maps each (layer, kv_head) to its class and its index inside that class's pool.
struct HeadMap {
  std::vector<std::vector<HeadClass>> cls;  // [layer][kv_head]
  std::vector<std::vector<int>> slot;       // [layer][kv_head] index within the pool's heads
  // The model's own sliding window per layer, 0 where the layer attends globally; empty when the
  // model has none. Every KV head of a windowed layer is a streaming head that sees exactly its
  // last `window` positions and no sink, in dense and sparse mode alike: the model was trained
  // that way, so this is exact attention, not an approximation.
  std::vector<int32_t> window;

  static HeadMap all_retrieval(int n_layers, int n_kv_heads);
  // From per-layer flags (true = retrieval).
  static HeadMap from_flags(const std::vector<std::vector<bool>>& retrieval);
  // Makes every head of each layer with windows[layer] > 0 a streaming head of that window (the
  // classes the sparse config chose for those layers are overridden); empty: no change.
  void set_model_windows(const std::vector<int32_t>& windows);

  int count(int layer, HeadClass c) const;
  // The model's window of `layer` (0: none).
  int32_t model_window(int layer) const { return window.empty() ? 0 : window[layer]; }
  int32_t max_model_window() const;
  // Whether some streaming head follows the sparse config (sink + local window) rather than a
  // model window: only then do the pools keep sink pages and the sparse windows.
  bool has_sparse_streaming() const;
};

}  // namespace lserve
