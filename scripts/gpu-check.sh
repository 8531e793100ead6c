#!/usr/bin/env bash
# On the GPU machine: build the CUDA backend, run every GPU test, the attention kernel benchmark
# and its PyTorch SDPA peer (cuDNN, FlashAttention-2) in one go; logs go to $OUT, a short table
# is printed last. The machine lacks pcre2.h: the caller carries it in .gpu-deps/include
# (scripts/gpu-deps.sh puts it there).
#   BENCH_ARGS / PEER_ARGS: size flags for bench/attention_bench and bench/sdpa_peer.py
#   GPU_TESTS=0 skips the tests; GPU_BENCH=0 skips the kernel benchmarks; E2E=1 also runs
#   bench/e2e_gpu.py (lserve generate, Llama-3.1-8B shape with dummy weights, dense vs sparse).
set -uo pipefail
OUT="${OUT:-/tmp/lserve-gpu}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
jobs=$(nproc)
if ! cmake -S . -B build-gpu -G Ninja -DLSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
     -DLSERVE_EXTRA_INCLUDE="$PWD/.gpu-deps/include" >"$OUT/cmake.log" 2>&1; then
  tail -40 "$OUT/cmake.log"; exit 1
fi
start=$(date +%s)
targets="lserve_cuda_tests attention_bench"
[ "${E2E:-0}" = 1 ] && targets="$targets lserve"
if ! cmake --build build-gpu -j "$jobs" --target $targets >"$OUT/build.log" 2>&1; then
  grep -E "error" -A6 "$OUT/build.log" | head -80; exit 1
fi
echo "build: $(( $(date +%s) - start )) s"
status=0
if [ "${GPU_TESTS:-1}" = 1 ]; then
  timeout 300 build-gpu/lserve_cuda_tests >"$OUT/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |max \|diff\||whole model|Failure|Expected|actual|error" "$OUT/tests.log" | head -60
fi
if [ "${GPU_BENCH:-1}" = 1 ]; then
  timeout 240 build-gpu/attention_bench ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1 || status=1
  timeout 200 python3 bench/sdpa_peer.py ${PEER_ARGS:-} >"$OUT/peer.log" 2>&1 || status=1
  echo "==== lserve"; cat "$OUT/bench.log"
  echo "==== peers (PyTorch SDPA)"; cat "$OUT/peer.log"
fi
if [ "${E2E:-0}" = 1 ]; then
  timeout 420 python3 bench/e2e_gpu.py --lserve build-gpu/lserve ${E2E_ARGS:-} 2>&1 | tee "$OUT/e2e.log" || status=1
fi
exit $status
