// The GPU estimates (antidiagonal and sampled rows) and keep rule of dynamic block-sparse prefill
// (kernels/prefill_blocks.cuh) against the CPU reference (sparse/prefill_blocks.h): keys in a paged
// pool with shuffled pages, chunks starting and ending inside query blocks, groups below, at and
// above the kernel's four heads per pass, head dims 64 and 128, a planted key block so the shares
// are far from uniform. Shares are compared to 1e-5 (float on the GPU, double on the CPU: 56 runs
// on the H200 differed by at most 7.4e-7), their sums to 1e-4; the kept blocks of the GPU's own
// shares must equal the CPU rule's applied to the same shares.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/launch.h"
#include "core/dtype.h"
#include "gpu_test.h"
#include "sparse/prefill_blocks.h"
#include "test_util.h"

namespace lserve::cuda {
namespace {

using test::DeviceBuffer;

struct MassCase {
  int group, head_dim, page_size;
  int32_t start_pos, q_len;  // the prefill chunk
};

void run_case(const MassCase& c, bool wgmma, PrefillEstimate estimate, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int n_kv = 2, hq = n_kv * c.group, d = c.head_dim, P = c.page_size;
  const int32_t n_tokens = c.start_pos + c.q_len;
  const int n_pages = (n_tokens + P - 1) / P;
  const int n_pool = 3;  // head slots per page; the two KV heads use slots 2 and 0
  const std::vector<int32_t> head_slot = {2, 0};
  std::vector<int32_t> pages(n_pages);
  std::iota(pages.begin(), pages.end(), 0);
  std::shuffle(pages.begin(), pages.end(), rng);
  const int page_base = 5;  // the sequence's entries start past other sequences'
  std::vector<int32_t> page_indices(page_base + n_pages, -7);
  std::copy(pages.begin(), pages.end(), page_indices.begin() + page_base);

  // Queries of the chunk; keys of every position. Each KV head's queries and its block-1 keys
  // share a direction, so the estimate has a block to find.
  auto round = [](float x) { return bf16_to_f32(f32_to_bf16(x)); };
  std::vector<float> u(static_cast<size_t>(n_kv) * d);
  for (auto& x : u) x = dist(rng);
  std::vector<float> q(static_cast<size_t>(c.q_len) * hq * d);
  for (size_t i = 0; i < q.size(); ++i) {
    const int kv = static_cast<int>(i / d % hq) / c.group;
    q[i] = round(dist(rng) + 0.5f * u[kv * d + i % d]);
  }
  std::vector<float> k(static_cast<size_t>(n_kv) * n_tokens * d);  // [kv][pos][d]
  for (size_t i = 0; i < k.size(); ++i) {
    const int kv = static_cast<int>(i / d / n_tokens);
    const bool planted = static_cast<int32_t>(i / d % n_tokens) / kPrefillBlock == 1;
    k[i] = round(dist(rng) + (planted ? 0.5f * u[kv * d + i % d] : 0.0f));
  }
  std::vector<uint16_t> q16(q.size()), pool(static_cast<size_t>(n_pages) * n_pool * P * d, 0);
  for (size_t i = 0; i < q.size(); ++i) q16[i] = f32_to_bf16(q[i]);
  for (int kv = 0; kv < n_kv; ++kv) {
    for (int32_t j = 0; j < n_tokens; ++j) {
      const int64_t row = (static_cast<int64_t>(pages[j / P]) * n_pool + head_slot[kv]) * P + j % P;
      for (int ch = 0; ch < d; ++ch) {
        pool[row * d + ch] = f32_to_bf16(k[(static_cast<size_t>(kv) * n_tokens + j) * d + ch]);
      }
    }
  }

  // Items: each query block the chunk touches, for each KV head.
  std::vector<PrefillMassItem> items;
  for (int32_t qb = c.start_pos / kPrefillBlock; qb * kPrefillBlock < n_tokens; ++qb) {
    for (int kv = 0; kv < n_kv; ++kv) {
      PrefillMassItem it{};
      it.q_offset = 3;  // the chunk's rows follow another sequence's three
      it.start_pos = c.start_pos;
      it.r0 = std::max(0, qb * kPrefillBlock - c.start_pos);
      it.r1 = std::min(c.q_len, (qb + 1) * kPrefillBlock - c.start_pos);
      it.page_base = page_base;
      it.kv_head = kv;
      items.push_back(it);
    }
  }
  const int n_items = static_cast<int>(items.size());
  const int32_t max_blocks = (n_tokens - 1) / kPrefillBlock + 3;  // a stride wider than needed

  std::vector<uint16_t> q_dev(static_cast<size_t>(3 + c.q_len) * hq * d, f32_to_bf16(9.0f));
  std::copy(q16.begin(), q16.end(), q_dev.begin() + static_cast<size_t>(3) * hq * d);
  DeviceBuffer dq(q_dev), dpool(pool), dpages(page_indices), dslot(head_slot), ditems(items);
  // Outputs poisoned (0xff bytes: NaN shares, -1 blocks): entries past an item's blocks must stay
  // so, and the whole buffers can be read back.
  DeviceBuffer dmass(static_cast<size_t>(n_items) * max_blocks * sizeof(float));
  LSERVE_CUDA_CHECK(cudaMemset(dmass.p, 0xff, static_cast<size_t>(n_items) * max_blocks * 4));
  PrefillMassParams mp{};
  mp.q = dq.as<bf16>();
  mp.n_heads = hq;
  mp.group = c.group;
  mp.k = dpool.as<bf16>();
  mp.page_indices = dpages.as<int32_t>();
  mp.head_slot = dslot.as<int32_t>();
  mp.page_size = P;
  mp.n_pool = n_pool;
  mp.scale = 1.0f / std::sqrt(static_cast<float>(d));
  mp.sampled_rows = estimate == PrefillEstimate::kSampledRows;
  mp.items = ditems.as<PrefillMassItem>();
  mp.n_items = n_items;
  mp.mass = dmass.as<float>();
  mp.max_blocks = max_blocks;
  // Fewer CTAs than items, so CTAs take several items each (and reuse their scratch).
  const int ctas = std::max(1, n_items / 3);
  mp.scratch_stride = prefill_mass_scratch_floats(max_blocks, mp.sampled_rows);
  DeviceBuffer dscratch(static_cast<size_t>(ctas) * mp.scratch_stride * sizeof(float));
  mp.scratch = dscratch.as<float>();
  LSERVE_CUDA_CHECK(launch_prefill_mass(mp, d, wgmma, ctas, Stream{}));
  LSERVE_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> mass = dmass.download<float>(static_cast<size_t>(n_items) * max_blocks);

  double worst = 0;
  int planted_first = 0;
  std::vector<std::vector<double>> got(n_items);
  for (int i = 0; i < n_items; ++i) {
    const PrefillMassItem& it = items[i];
    std::vector<int32_t> q_pos;
    for (int32_t r = it.r0; r < it.r1; ++r) q_pos.push_back(c.start_pos + r);
    PrefillBlockQuery in;
    in.q = q.data() + (static_cast<size_t>(it.r0) * hq + it.kv_head * c.group) * d;
    in.q_stride = static_cast<int64_t>(hq) * d;
    in.q_pos = q_pos.data();
    in.nq = it.r1 - it.r0;
    in.group = c.group;
    in.head_dim = d;
    in.k = k.data() + static_cast<size_t>(it.kv_head) * n_tokens * d;
    in.nk = q_pos.back() + 1;
    in.scale = mp.scale;
    const std::vector<double> want = prefill_block_mass(in, estimate);
    got[i].assign(mass.begin() + static_cast<int64_t>(i) * max_blocks,
                  mass.begin() + static_cast<int64_t>(i) * max_blocks + want.size());
    for (int32_t b = static_cast<int32_t>(want.size()); b < max_blocks; ++b) {
      EXPECT_TRUE(std::isnan(mass[static_cast<size_t>(i) * max_blocks + b])) << "item " << i;
    }
    double sum = 0;
    for (size_t b = 0; b < want.size(); ++b) {
      worst = std::max(worst, std::abs(got[i][b] - want[b]));
      ASSERT_NEAR(got[i][b], want[b], 1e-5) << "item " << i << " block " << b;
      sum += got[i][b];
    }
    EXPECT_NEAR(sum, 1.0, 1e-4) << "item " << i;
    if (want.size() > 2 && std::max_element(want.begin() + 1, want.end() - 1) - want.begin() == 1) {
      ++planted_first;
    }
  }
  EXPECT_GT(planted_first, 0) << "the planted block leads no item's off-diagonal shares";
  std::printf("%s, %s: items %d, max |share diff| %.2e\n", wgmma ? "wgmma" : "mma.sync",
              std::string(prefill_estimate_name(estimate)).c_str(), n_items, worst);

  // The keep rule on the GPU's shares, at thresholds from few blocks to all.
  for (float threshold : {0.3f, 0.7f, 0.95f, 1.0f}) {
    for (auto& it : items) it.threshold = threshold;
    DeviceBuffer ditems_t(items);
    DeviceBuffer dkept(static_cast<size_t>(n_items) * max_blocks * sizeof(int32_t));
    DeviceBuffer dcount(static_cast<size_t>(n_items) * sizeof(int32_t));
    LSERVE_CUDA_CHECK(cudaMemset(dkept.p, 0xff, static_cast<size_t>(n_items) * max_blocks * 4));
    PrefillKeepParams kp{};
    kp.items = ditems_t.as<PrefillMassItem>();
    kp.mass = dmass.as<float>();
    kp.max_blocks = max_blocks;
    kp.kept = dkept.as<int32_t>();
    kp.count = dcount.as<int32_t>();
    LSERVE_CUDA_CHECK(launch_prefill_keep(kp, n_items, Stream{}));
    LSERVE_CUDA_CHECK(cudaDeviceSynchronize());
    const auto kept = dkept.download<int32_t>(static_cast<size_t>(n_items) * max_blocks);
    const auto count = dcount.download<int32_t>(n_items);
    for (int i = 0; i < n_items; ++i) {
      const std::vector<int32_t> want = keep_prefill_blocks(got[i], threshold);
      const std::vector<int32_t> have(
          kept.begin() + static_cast<int64_t>(i) * max_blocks,
          kept.begin() + static_cast<int64_t>(i) * max_blocks + std::max(0, count[i]));
      ASSERT_EQ(have, want) << "item " << i << ", threshold " << threshold;
      for (int32_t j = count[i]; j < max_blocks; ++j) {
        EXPECT_EQ(kept[static_cast<size_t>(i) * max_blocks + j], -1) << "item " << i;
      }
    }
  }
}

class CudaPrefillBlocks : public testing::TestWithParam<MassCase> {};

// Both estimates: with mma.sync (what GPUs before Hopper run) everywhere, with wgmma on sm_90.
TEST_P(CudaPrefillBlocks, SharesAndKeptBlocksMatchTheReference) {
  LSERVE_SKIP_WITHOUT_GPU();
  bool hopper = false;
  LSERVE_CUDA_CHECK(probe_wgmma(&hopper, nullptr));
  for (bool wgmma : {false, true}) {
    if (wgmma && !hopper) {
      std::printf("no sm_90 device: the wgmma estimate is not run\n");
      continue;
    }
    for (PrefillEstimate e : {PrefillEstimate::kAntidiagonal, PrefillEstimate::kSampledRows}) {
      SCOPED_TRACE(fmt::format("{}, {}", wgmma ? "wgmma" : "mma.sync", prefill_estimate_name(e)));
      run_case(GetParam(), wgmma, e, test::test_seed());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaPrefillBlocks,
    testing::Values(MassCase{4, 128, 16, 0, 901},     // one chunk from position 0
                    MassCase{3, 64, 64, 256, 389},    // a block-aligned chunk, group 3
                    MassCase{1, 128, 16, 300, 211},   // starting and ending inside blocks
                    MassCase{6, 64, 16, 128, 600},    // two passes over the keys (group 6)
                    MassCase{4, 128, 16, 2100, 333},  // keys over three 1,024-key tiles
                    MassCase{8, 64, 32, 1000, 150},   // two passes, query blocks across a tile
                    MassCase{2, 64, 12, 500, 300}),   // pages that split 8-key columns
    [](const testing::TestParamInfo<MassCase>& i) {
      return fmt::format("G{}_d{}_P{}_from{}_len{}", i.param.group, i.param.head_dim,
                         i.param.page_size, i.param.start_pos, i.param.q_len);
    });

}  // namespace
}  // namespace lserve::cuda
