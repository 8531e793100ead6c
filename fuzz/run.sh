#!/usr/bin/env bash
# Runs the fuzz targets built in FUZZ_BUILD_DIR (`make fuzz` builds them) for FUZZ_SECONDS each,
# every one on its own working copy of its seed corpus (fuzz/corpus/<target>/ is only read), and
# fails if any target finds a crash, a sanitizer report, a leak, a timeout or an out-of-memory.
#
#   fuzz/run.sh [target...]    all six targets when none is named
#
# Environment: FUZZ_BUILD_DIR (build-fuzz), FUZZ_SECONDS (60), FUZZ_JOBS (targets run at once, 1),
# FUZZ_TIMEOUT (seconds one input may take, 10), FUZZ_ARGS (more libFuzzer flags).
# Working corpora, logs and the inputs of findings go to FUZZ_BUILD_DIR/fuzz-work/.
set -euo pipefail
cd "$(dirname "$0")/.."

build="${FUZZ_BUILD_DIR:-build-fuzz}"
seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-1}"
timeout="${FUZZ_TIMEOUT:-10}"
all=(fuzz_gguf fuzz_safetensors fuzz_tokenizer_json fuzz_hf_config fuzz_openai_request
  fuzz_chat_template)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
work="$build/fuzz-work"

for t in "${targets[@]}"; do
  if [ ! -x "$build/fuzz/$t" ]; then
    echo "fuzz: $build/fuzz/$t is not built (make fuzz builds it)" >&2
    exit 2
  fi
  mkdir -p "$work/corpus/$t" "$work/findings/$t" "$work/logs"
  cp -n fuzz/corpus/"$t"/* "$work/corpus/$t/"
done

# One target: libFuzzer's exit status (kept in logs/<target>.status) says whether it found
# anything; the summary line comes from its final statistics.
run_one() {
  local t="$1"
  local log="$work/logs/$t.log"
  local dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  local start=$SECONDS rc=0 TIMEFORMAT='%U %S'
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  { time "$build/fuzz/$t" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/findings/$t/" "${dict[@]}" ${FUZZ_ARGS:-} \
    "$work/corpus/$t" >"$log" 2>&1; } 2>"$work/logs/$t.cpu" || rc=$?
  local execs corpus cpu
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  corpus="$(find "$work/corpus/$t" -type f | wc -l)"
  cpu="$(awk '{printf "%.0f", $1 + $2}' "$work/logs/$t.cpu" 2>/dev/null)"
  if [ "$rc" -eq 0 ]; then
    echo "fuzz: $t: ok, $((SECONDS - start)) s ($cpu s CPU), ${execs:-?} executions," \
      "corpus $corpus inputs"
  else
    echo "fuzz: $t: FAILED (exit $rc) after $((SECONDS - start)) s; log $log, input in" \
      "$work/findings/$t/"
    grep -E -A 30 '^==[0-9]+==ERROR|runtime error|^fuzz: unexpected|ALARM|out-of-memory|^SUMMARY' \
      "$log" | head -60 || tail -40 "$log"
  fi
  echo "$rc" >"$work/logs/$t.status"
}

echo "fuzz: ${targets[*]}: $seconds s each, $jobs at a time (logs in $work/logs)"
for t in "${targets[@]}"; do
  rm -f "$work/logs/$t.status"
  run_one "$t" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait
failed=0
for t in "${targets[@]}"; do
  [ "$(cat "$work/logs/$t.status" 2>/dev/null)" = 0 ] || failed=$((failed + 1))
done
if [ "$failed" -gt 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets found problems" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets clean"
