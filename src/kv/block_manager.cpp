#include "kv/block_manager.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace lserve {

BlockManager::BlockManager(const BlockManagerConfig& config)
    : config_(config),
      pool_(config.num_pages),
      stream_pool_(config.num_stream_pages),
      sel_slots_(config.num_sel_slots) {
  LSERVE_CHECK(config.page_size > 0, "page size must be positive, got {}", config.page_size);
  LSERVE_CHECK(config.sink_tokens >= 0, "sink tokens must not be negative");
}

int BlockManager::sink_blocks() const {
  return (config_.sink_tokens + config_.page_size - 1) / config_.page_size;
}

int32_t BlockManager::window_start(int64_t q, int32_t window) const {
  const int64_t first_visible = q - window + 1;
  return first_visible <= 0 ? 0 : static_cast<int32_t>(first_visible / config_.page_size);
}

void BlockManager::trim_window(SequenceKv& kv, int32_t first_query, int32_t window) {
  if (!has_streaming()) return;
  const int32_t keep_from = window_start(first_query, window);
  if (keep_from == 0) return;
  while (!kv.window_pages.empty() && kv.window_first < keep_from) {
    stream_pool_.release_one(kv.window_pages.front());
    kv.window_pages.erase(kv.window_pages.begin());
    ++kv.window_first;
  }
  if (kv.window_pages.empty()) kv.window_first = std::max(kv.window_first, keep_from);
}

int BlockManager::pages_needed(const SequenceKv& kv, int32_t num_tokens) const {
  const int want = (num_tokens + config_.page_size - 1) / config_.page_size;
  return std::max(0, want - static_cast<int>(kv.pages.size()));
}

int BlockManager::stream_pages_needed(const SequenceKv& kv, int32_t num_tokens) const {
  if (!has_streaming()) return 0;
  const int blocks = (num_tokens + config_.page_size - 1) / config_.page_size;
  const int sinks = std::min(blocks, sink_blocks());
  const int first = std::max(kv.window_first, sink_blocks());
  const int window = std::max(0, blocks - first);
  return std::max(0, sinks - static_cast<int>(kv.sink_pages.size())) +
         std::max(0, window - static_cast<int>(kv.window_pages.size()));
}

bool BlockManager::can_grow(const SequenceKv& kv, int32_t num_tokens) const {
  return pool_.can_allocate(pages_needed(kv, num_tokens)) &&
         stream_pool_.can_allocate(stream_pages_needed(kv, num_tokens)) &&
         (kv.sel_slot >= 0 || config_.num_sel_slots == 0 || sel_slots_.can_allocate(1));
}

void BlockManager::grow(SequenceKv& kv, int32_t num_tokens) {
  if (!can_grow(kv, num_tokens)) {
    throw OutOfMemoryError("KV cache exhausted: no free pages for this sequence");
  }
  const auto fresh = pool_.allocate(pages_needed(kv, num_tokens));
  kv.pages.insert(kv.pages.end(), fresh.begin(), fresh.end());
  if (has_streaming()) {
    const int blocks = (num_tokens + config_.page_size - 1) / config_.page_size;
    while (static_cast<int>(kv.sink_pages.size()) < std::min(blocks, sink_blocks())) {
      kv.sink_pages.push_back(stream_pool_.allocate_one());
    }
    kv.window_first = std::max(kv.window_first, sink_blocks());
    while (kv.window_first + static_cast<int>(kv.window_pages.size()) < blocks) {
      kv.window_pages.push_back(stream_pool_.allocate_one());
    }
  }
  if (kv.sel_slot < 0 && config_.num_sel_slots > 0) kv.sel_slot = sel_slots_.allocate_one();
}

void BlockManager::release(SequenceKv& kv) {
  for (auto it = kv.pages.rbegin(); it != kv.pages.rend(); ++it) pool_.release_one(*it);
  for (auto it = kv.window_pages.rbegin(); it != kv.window_pages.rend(); ++it) {
    stream_pool_.release_one(*it);
  }
  for (auto it = kv.sink_pages.rbegin(); it != kv.sink_pages.rend(); ++it) {
    stream_pool_.release_one(*it);
  }
  if (kv.sel_slot >= 0) sel_slots_.release_one(kv.sel_slot);
  kv = SequenceKv{};
}

namespace {

// splitmix64's finaliser: a bijection that spreads every input bit over the output.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<PageHash> BlockManager::block_hashes(std::span<const int32_t> tokens, int n_blocks,
                                                 uint64_t salt, std::vector<PageHash> from) const {
  const int P = config_.page_size;
  LSERVE_ASSERT(static_cast<int64_t>(n_blocks) * P <= static_cast<int64_t>(tokens.size()));
  // Two chains from different seeds: hi confirms what lo finds.
  PageHash h = from.empty() ? PageHash{mix(salt ^ 0x6c73657276650001ull), mix(salt + 0x51ed27)}
                            : from.back();
  for (int b = static_cast<int>(from.size()); b < n_blocks; ++b) {
    for (int i = 0; i < P; ++i) {
      const auto t = static_cast<uint64_t>(static_cast<uint32_t>(tokens[b * P + i]));
      h.lo = mix(h.lo ^ t);
      h.hi = mix(h.hi + t * 0x2545f4914f6cdd1dull);
    }
    from.push_back(h);
  }
  return from;
}

int32_t BlockManager::stream_page(const SequenceKv& kv, int32_t b) const {
  if (b < static_cast<int32_t>(kv.sink_pages.size())) return kv.sink_pages[b];
  const int32_t w = b - kv.window_first;
  return b >= sink_blocks() && w >= 0 && w < static_cast<int32_t>(kv.window_pages.size())
             ? kv.window_pages[w]
             : -1;
}

int32_t BlockManager::reuse_prefix(SequenceKv& kv, std::span<const int32_t> tokens,
                                   int32_t max_tokens, int32_t window, uint64_t salt,
                                   int32_t align_tokens) {
  LSERVE_ASSERT(kv.pages.empty() && kv.stream_pages() == 0 && kv.num_tokens == 0);
  const int P = config_.page_size;
  const int max_blocks = std::max(0, std::min<int32_t>(max_tokens, tokens.size())) / P;
  // Retrieval pages: the run of found blocks from the start.
  std::vector<PageHash> hashes;
  std::vector<int32_t> ret;
  for (int b = 0; b < max_blocks; ++b) {
    hashes = block_hashes(tokens, b + 1, salt, std::move(hashes));
    const int32_t page = pool_.find(hashes.back());
    if (page < 0) break;
    ret.push_back(page);
  }
  // Runs of whole pages that also end on a multiple of align_tokens.
  LSERVE_ASSERT(align_tokens >= 1);
  const int step = static_cast<int>(std::lcm<int64_t>(P, align_tokens) / P);
  int n = static_cast<int>(ret.size()) / step * step;
  std::vector<int32_t> str;
  if (has_streaming() && n > 0) {
    for (int b = 0; b < n; ++b) str.push_back(stream_pool_.find(hashes[b]));
    // The longest run whose next query finds its sink blocks and its window blocks.
    const int S = sink_blocks();
    int sinks_found = 0;
    while (sinks_found < std::min(S, n) && str[sinks_found] >= 0) ++sinks_found;
    for (; n > 0; n -= step) {
      if (sinks_found < std::min(S, n)) continue;
      const int first = std::max(S, window_start(static_cast<int64_t>(n) * P, window));
      bool all = true;
      for (int b = first; b < n && all; ++b) all = str[b] >= 0;
      if (all) break;
    }
  }
  if (n == 0) return 0;
  for (int b = 0; b < n; ++b) {
    pool_.acquire(ret[b]);
    kv.pages.push_back(ret[b]);
  }
  if (has_streaming()) {
    const int S = sink_blocks();
    for (int b = 0; b < std::min(S, n); ++b) {
      stream_pool_.acquire(str[b]);
      kv.sink_pages.push_back(str[b]);
    }
    kv.window_first = std::max(S, window_start(static_cast<int64_t>(n) * P, window));
    for (int b = kv.window_first; b < n; ++b) {
      stream_pool_.acquire(str[b]);
      kv.window_pages.push_back(str[b]);
    }
  }
  hashes.resize(n);
  kv.block_hashes = std::move(hashes);
  kv.num_tokens = n * P;
  return kv.num_tokens;
}

void BlockManager::register_full_blocks(SequenceKv& kv, std::span<const int32_t> tokens,
                                        int32_t cacheable, uint64_t salt) {
  const int32_t full =
      std::min({kv.num_tokens, cacheable, static_cast<int32_t>(tokens.size())}) / config_.page_size;
  const auto done = static_cast<int32_t>(kv.block_hashes.size());
  if (full <= done) return;
  kv.block_hashes = block_hashes(tokens, full, salt, std::move(kv.block_hashes));
  for (int32_t b = done; b < full; ++b) {
    if (b < static_cast<int32_t>(kv.pages.size())) pool_.set_hash(kv.pages[b], kv.block_hashes[b]);
    if (has_streaming()) {
      const int32_t sp = stream_page(kv, b);
      if (sp >= 0) stream_pool_.set_hash(sp, kv.block_hashes[b]);
    }
  }
}

}  // namespace lserve
