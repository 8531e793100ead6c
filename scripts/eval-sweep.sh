#!/usr/bin/env bash
# Separates the causes of sparse attention's retrieval misses: `lserve eval` once per named
# configuration (each switching one part of sparse attention on or off against LServe's proportions
# scaled to the prompt length), then one table of every configuration's averages.
#
#   scripts/eval-sweep.sh OUTDIR [CONFIG...]      (no CONFIG: all of them)
#
# Environment: LSERVE (binary, default build/lserve), LENGTHS ("1024 2048 4096 8192"), TASKS
# ("needle passkey niah_single niah_multikey niah_multivalue niah_multiquery"), NUM_CASES (10),
# EXTRA (more flags for every run, e.g. "--device cuda --kv-cache-mib 8192").
set -euo pipefail
out=${1:?usage: scripts/eval-sweep.sh OUTDIR [CONFIG...]}
shift
mkdir -p "$out"
lserve=${LSERVE:-build/lserve}
lengths=${LENGTHS:-1024 2048 4096 8192}
tasks=${TASKS:-needle passkey niah_single niah_multikey niah_multivalue niah_multiquery}
# LServe's 128K settings scaled to the context: P 16, L 4, sink 64, local 128, budget 6% of the
# prompt, prefill window 12%, selection reused for 4 steps, half the KV heads streaming.
# (streaming-only: a budget above every prompt length, so no page is ever left out.)
scaled="--page-size 16 --sink-tokens 64 --local-tokens 128 --prefill-window-ratio 0.12"
declare -A configs=(
  [default]="--modes dense sparse"
  [scaled]="--modes sparse $scaled --logical-page-size 4 --budget-ratio 0.06"
  [streaming-only]="--modes sparse $scaled --logical-page-size 4 --token-budget 16384"
  [selection-only]="--modes sparse $scaled --logical-page-size 4 --budget-ratio 0.06 --static-sparsity 0"
  [interval-1]="--modes sparse $scaled --logical-page-size 4 --budget-ratio 0.06 --selector-interval 1"
  [query-head]="--modes sparse $scaled --logical-page-size 4 --budget-ratio 0.06 --selector-granularity query-head"
  [logical-2]="--modes sparse $scaled --logical-page-size 2 --budget-ratio 0.06"
  [logical-16]="--modes sparse $scaled --logical-page-size 16 --budget-ratio 0.06"
  [drift]="--modes sparse $scaled --logical-page-size 4 --budget-ratio 0.06 --selector-drift 0.9"
  # The selector scoring every key itself (one-token logical pages) instead of page bounds.
  [exact]="--modes sparse $scaled --logical-page-size 1 --budget-ratio 0.06"
  [exact-selection-only]="--modes sparse $scaled --logical-page-size 1 --budget-ratio 0.06 --static-sparsity 0"
  [exact-interval-1]="--modes sparse $scaled --logical-page-size 1 --budget-ratio 0.06 --selector-interval 1"
  [default-exact]="--modes sparse --logical-page-size 1"
  # Dynamic block-sparse prefill on top of the defaults (bf16 KV on CUDA; not in the
  # default order: name them to run them), without the dense tail.
  [prefill-0.9]="--modes sparse --prefill-sparsity 0.9 --prefill-dense-tail 0"
  [prefill-0.95]="--modes sparse --prefill-sparsity 0.95 --prefill-dense-tail 0"
  [prefill-0.99]="--modes sparse --prefill-sparsity 0.99 --prefill-dense-tail 0"
  # The same with the sampled-row estimate.
  [rows-0.9]="--modes sparse --prefill-sparsity 0.9 --prefill-estimate sampled-rows --prefill-dense-tail 0"
  [rows-0.95]="--modes sparse --prefill-sparsity 0.95 --prefill-estimate sampled-rows --prefill-dense-tail 0"
  [rows-0.99]="--modes sparse --prefill-sparsity 0.99 --prefill-estimate sampled-rows --prefill-dense-tail 0"
  # The antidiagonal with the prompt's last 256 positions dense (the default tail).
  [tail-0.9]="--modes sparse --prefill-sparsity 0.9 --prefill-dense-tail 256"
  [tail-0.95]="--modes sparse --prefill-sparsity 0.95 --prefill-dense-tail 256"
  [tail-0.99]="--modes sparse --prefill-sparsity 0.99 --prefill-dense-tail 256"
)
order=(default scaled streaming-only selection-only interval-1 query-head logical-2 logical-16
  drift exact exact-selection-only exact-interval-1 default-exact)
[ $# -gt 0 ] && order=("$@")
for name in "${order[@]}"; do
  [ -n "${configs[$name]+x}" ] || { echo "unknown configuration $name" >&2; exit 2; }
  echo "==== $name: ${configs[$name]}"
  # shellcheck disable=SC2086  # the flag strings are meant to split
  "$lserve" eval --tasks $tasks --lengths $lengths --num-cases "${NUM_CASES:-10}" \
    ${configs[$name]} ${EXTRA:-} --output-json "$out/$name.json" --log-level warn \
    >"$out/$name.log" 2>&1 || echo "$name failed: see $out/$name.log" >&2
done
python3 "$(dirname "$0")/eval_table.py" "$out"/*.json
