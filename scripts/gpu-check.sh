#!/usr/bin/env bash
# On the GPU machine: build the CUDA backend and `lserve`, then run the stages asked for, logs to
# $OUT and a short summary printed last. The machine lacks pcre2.h: the caller carries it in
# .gpu-deps/include (scripts/gpu-deps.sh puts it there).
#   TESTS=1      every GPU test (lserve_cuda_tests)
#   SANITIZE=1   compute-sanitizer memcheck, racecheck, synccheck, initcheck at once, each over
#                every GPU test; fails on any report (SANITIZE_FILTER: a gtest filter;
#                SANITIZE_TIMEOUT: seconds per tool; SANITIZE_TOOLS: a subset of the four)
#   KERNELS=1    bench/attention_bench and its PyTorch SDPA peer (BENCH_ARGS / PEER_ARGS)
#   SOURCE=1     ncu's source-level warp sampling of one launch of the kernel SOURCE_KERNEL (a regex,
#                default the warp-specialised prefill) in attention_bench SOURCE_ARGS, summarised
#                by scripts/ncu_source.py (stalls per role and per instruction)
#   GEMV=1       bench/gemv_bench: decode GEMMs vs cuBLASLt (GEMV_ARGS)
#   E2E=1        bench/e2e_gpu.py: `lserve bench` decode, Llama-3.1-8B shape (E2E_ARGS); with
#                E2E_EXTRA (lserve flags) the same runs once more with those flags
#   NCU=1        per-kernel times of one recorded decode step (NCU_ARGS: the lserve bench flags);
#                NCU_DETAIL=regex also prints ncu's detailed sections for the kernels it matches
#   PEER=1       bench/hf_peer.py: Hugging Face transformers decode (PEER_HF_ARGS)
#   SERVE=1      the server tests (needs models/ and the openai client on PYTHONPATH) and
#                bench/serve_bench.py against `lserve serve --device cuda` (SERVE_RUNS)
#   PREFIX=1     bench/prefix_cache_bench.py: questions about one document of PREFIX_DOC_LEN
#                tokens (default 127000) on the Llama-3.1-8B-shaped dummy model
#   EVAL=1       scripts/eval-sweep.sh on the GPU (EVAL_CONFIGS; LENGTHS, TASKS, NUM_CASES); needs
#                models/ and data/PaulGrahamEssays (the GPU machine cannot fetch them: carry them)
# The default model is larger than one call may carry: a first call carrying .gpu-model-a/part
# keeps it under models/ (ignored, so it stays on a warm machine), and a second carrying
# .gpu-model-b/part joins the two into models/SmolLM2-135M-Instruct.Q4_1.gguf.
# Everything written under $OUT but the summary is packed into $OUT/logs.tgz at the end (few files
# come back from the machine).
set -uo pipefail
OUT="${OUT:-/tmp/lserve-gpu}"
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee "$OUT/gpu.txt"
summary="$OUT/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }
jobs=$(nproc)
if ! cmake -S . -B build-gpu -G Ninja -DLSERVE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a \
     -DLSERVE_EXTRA_INCLUDE="$PWD/.gpu-deps/include" >"$OUT/cmake.log" 2>&1; then
  tail -40 "$OUT/cmake.log"; exit 1
fi
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p models
[ -f .gpu-model-a/part ] && cp .gpu-model-a/part models/.part-a
if [ -f .gpu-model-b/part ] && [ -f models/.part-a ]; then
  cat models/.part-a .gpu-model-b/part >"$model"
fi
[ -f "$model" ] && note "model: $(sha256sum "$model" | cut -c1-16)"
start=$(date +%s)
if ! cmake --build build-gpu -j "$jobs" --target lserve_cuda_tests attention_bench gemv_bench lserve \
     >"$OUT/build.log" 2>&1; then
  grep -E "error" -A6 "$OUT/build.log" | head -80; exit 1
fi
note "build: $(( $(date +%s) - start )) s"
status=0
T=build-gpu/lserve_cuda_tests
if [ "${TESTS:-0}" = 1 ]; then
  timeout 400 $T >"$OUT/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED|max \|diff\||whole model|replayed|tokens compared|Failure|Expected|actual" "$OUT/tests.log" | head -60
  note "tests: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/tests.log" | tr '\n' ' ')"
fi
if [ "${SANITIZE:-0}" = 1 ]; then
  # The four tools run at once (each is CPU-bound in its own process; the GPU has room for all),
  # each over the whole GPU suite unless SANITIZE_FILTER narrows it. Any report fails the stage.
  filter="${SANITIZE_FILTER:-*}"
  tools=(${SANITIZE_TOOLS:-memcheck racecheck synccheck initcheck})
  for tool in "${tools[@]}"; do
    ( timeout ${SANITIZE_TIMEOUT:-420} compute-sanitizer --tool $tool --error-exitcode 9 \
        $T --gtest_filter="$filter" >"$OUT/sanitize-$tool.log" 2>&1
      echo $? >"$OUT/sanitize-$tool.rc" ) &
  done
  wait
  for tool in "${tools[@]}"; do
    rc=$(cat "$OUT/sanitize-$tool.rc")
    note "compute-sanitizer $tool: rc $rc, $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/sanitize-$tool.log" | tr '\n' ' ')$(grep -cE '^========= (Invalid|Race|Barrier|Uninitialized|.*hazard)' "$OUT/sanitize-$tool.log") reports; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitize-$tool.log" | tail -1)"
    [ "$rc" = 0 ] || status=1
  done
fi
if [ "${GEMV:-0}" = 1 ]; then
  timeout 240 build-gpu/gemv_bench ${GEMV_ARGS:-} >"$OUT/gemv.log" 2>&1 || status=1
  echo "==== gemv_bench"; cat "$OUT/gemv.log" | grep -E "^\|" | head -60
fi
if [ "${KERNELS:-0}" = 1 ]; then
  timeout 240 build-gpu/attention_bench ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1 || status=1
  timeout 200 python3 bench/sdpa_peer.py ${PEER_ARGS:-} >"$OUT/peer.log" 2>&1 || status=1
  echo "==== lserve"; cat "$OUT/bench.log"
  echo "==== peers (PyTorch SDPA)"; cat "$OUT/peer.log"
fi
if [ "${SOURCE:-0}" = 1 ]; then
  # The first launch after the bench's own warm-up calls of that kernel (SOURCE_SKIP to move on).
  timeout 300 ncu --clock-control none --kernel-name "regex:${SOURCE_KERNEL:-prefill_ws_kernel}" \
    --launch-skip "${SOURCE_SKIP:-0}" --launch-count 1 --section SourceCounters \
    --section WarpStateStats --section SchedulerStats --section SpeedOfLight --import-source no \
    -f -o /tmp/lserve-source build-gpu/attention_bench \
    ${SOURCE_ARGS:---prefill 32768 --batch 1 --context 8192 --sparse-only} \
    >"$OUT/source-ncu.log" 2>&1 || status=1
  ncu -i /tmp/lserve-source.ncu-rep --page details >"$OUT/source-details.txt" 2>&1
  ncu -i /tmp/lserve-source.ncu-rep --page source --csv --print-source sass 2>/dev/null \
    | gzip >"$OUT/source.csv.gz"
  grep -E "Duration|One or More Eligible|Eligible Warps Per|Warp Cycles Per Issued" \
    "$OUT/source-details.txt" | head -8 | tee -a "$summary"
  python3 scripts/ncu_source.py "$OUT/source.csv.gz" 2>&1 | tee -a "$summary"
fi
if [ "${E2E:-0}" = 1 ]; then
  timeout 480 python3 bench/e2e_gpu.py --lserve build-gpu/lserve --json "$OUT/e2e.jsonl" ${E2E_ARGS:-} \
    2>&1 | tee "$OUT/e2e.log" || status=1
  if [ -n "${E2E_EXTRA:-}" ]; then
    echo "==== with $E2E_EXTRA"
    timeout 480 python3 bench/e2e_gpu.py --lserve build-gpu/lserve --json "$OUT/e2e-extra.jsonl" \
      ${E2E_ARGS:-} --extra-args "$E2E_EXTRA" 2>&1 | tee "$OUT/e2e-extra.log" || status=1
  fi
fi
if [ "${NCU:-0}" = 1 ]; then
  python3 bench/e2e_gpu.py --write-model /tmp/lserve-8b >/dev/null
  # Kernels of one recorded decode step (graph nodes profiled one by one), after warm-up steps.
  timeout 240 ncu --clock-control none --graph-profiling node --metrics gpu__time_duration.sum \
    --launch-skip ${NCU_SKIP:-3000} --launch-count ${NCU_COUNT:-600} --csv \
    build-gpu/lserve bench --device cuda --model /tmp/lserve-8b --load-format dummy \
    --synthetic-prefill --log-level warn ${NCU_ARGS:---input-len 131072 --output-len 64 --num-iters 1 --head-pattern /tmp/lserve-8b/heads.tsv} \
    >"$OUT/ncu.csv" 2>"$OUT/ncu.err" || status=1
  python3 scripts/ncu_summary.py "$OUT/ncu.csv" 2>&1 | tee -a "$summary"
  if [ -n "${NCU_DETAIL:-}" ]; then
    # One of each matching kernel, with memory throughput, occupancy and stall reasons.
    timeout 240 ncu --clock-control none --graph-profiling node --set detailed \
      --section WarpStateStats --section SchedulerStats \
      --kernel-name "regex:$NCU_DETAIL" --launch-skip ${NCU_DETAIL_SKIP:-200} \
      --launch-count ${NCU_DETAIL_COUNT:-12} \
      build-gpu/lserve bench --device cuda --model /tmp/lserve-8b --load-format dummy \
      --synthetic-prefill --log-level warn ${NCU_ARGS:---input-len 131072 --output-len 64 --num-iters 1 --head-pattern /tmp/lserve-8b/heads.tsv} \
      >"$OUT/ncu-detail.txt" 2>"$OUT/ncu-detail.err" || status=1
    grep -E '^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Grid Size|Block Size|Warp Cycles Per Issued|Theoretical Occupancy|Dynamic Shared|Stall' "$OUT/ncu-detail.txt" | head -${NCU_DETAIL_LINES:-200}
  fi
fi
if [ "${PEER:-0}" = 1 ]; then
  timeout 300 python3 bench/hf_peer.py --json "$OUT/hf.jsonl" ${PEER_HF_ARGS:-} 2>"$OUT/hf.err" \
    | tee "$OUT/hf.log" || status=1
fi
if [ "${SERVE:-0}" = 1 ]; then
  LSERVE_TEST_DEVICE=cuda LSERVE_BIN="$PWD/build-gpu/lserve" LSERVE_SOURCE_DIR="$PWD" timeout 400 python3 -m pytest -q \
    -p no:cacheprovider tests/server >"$OUT/server-tests.log" 2>&1 || status=1
  note "server tests: $(tail -1 "$OUT/server-tests.log")"
  # A test run cut short by its time limit leaves its servers running, each holding GPU memory.
  pkill -f "lserve serve" || true
  python3 bench/e2e_gpu.py --write-model /tmp/lserve-8b >/dev/null
  while read -r name args; do
    [ -z "$name" ] && continue
    timeout 300 python3 bench/serve_bench.py --launch build-gpu/lserve --result-json "$OUT/serve-$name.json" \
      $args >"$OUT/serve-$name.log" 2>&1 || status=1
    note "serve $name: $(grep -E 'Successful|Output token|Median TTFT|Median TPOT|P99 ITL' "$OUT/serve-$name.log" | tr -s ' ' | tr '\n' ';')"
  done <<<"${SERVE_RUNS:-}"
fi
if [ "${PREFIX:-0}" = 1 ]; then
  python3 bench/e2e_gpu.py --write-model /tmp/lserve-8b >/dev/null
  doc=${PREFIX_DOC_LEN:-127000}
  timeout 400 python3 -u bench/prefix_cache_bench.py --launch build-gpu/lserve --doc-len "$doc" \
    --questions 3 --server-args "--model /tmp/lserve-8b --load-format dummy --device cuda \
    --max-model-len $((doc + 4096)) --max-num-seqs 4 --head-pattern /tmp/lserve-8b/heads.tsv" \
    >"$OUT/prefix.log" 2>&1 || status=1
  grep -E "^\||document|second" "$OUT/prefix.log" | tee -a "$summary"
fi
if [ "${EVAL:-0}" = 1 ]; then
  EXTRA="--device cuda --kv-cache-mib 8192 ${EVAL_EXTRA:-}" LSERVE=build-gpu/lserve \
    timeout "${EVAL_TIMEOUT:-420}" scripts/eval-sweep.sh "$OUT/eval" ${EVAL_CONFIGS:-} \
    >"$OUT/eval.log" 2>&1 || status=1
  grep -E "^\|" "$OUT/eval.log" | tee -a "$summary"
fi
echo "==== summary"; cat "$summary"
tar czf /tmp/logs.tgz -C "$OUT" --exclude summary.txt . && find "$OUT" -mindepth 1 -not -name summary.txt -delete \
  && mv /tmp/logs.tgz "$OUT/logs.tgz"
exit $status
