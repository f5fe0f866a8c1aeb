#!/usr/bin/env bash
# Usage: fuzz/run.sh [SECONDS]   (default 60)
#
# Builds every libFuzzer target with clang in build-fuzz/ and runs each for
# SECONDS, starting from the seeds in fuzz/corpus/<name>/ (plus
# fuzz/<name>.dict when present). Exits non-zero on the first crash, leak,
# sanitizer report or timeout; the input that caused it is saved as
# build-fuzz/artifacts/<fuzzer>-crash-… and replays with
#   build-fuzz/fuzz/<fuzzer> <that file>
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${EVLA_FUZZ_BUILD_DIR:-$root/build-fuzz}

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEVLA_BUILD_FUZZERS=ON -DEVLA_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" --target fuzzers

mkdir -p "$build/artifacts"
for exe in "$build"/fuzz/fuzz_*; do
  [[ -x $exe && -f $exe ]] || continue
  name=$(basename "$exe")
  short=${name#fuzz_}
  # libFuzzer adds new inputs to the first corpus directory: a scratch copy,
  # so the checked-in seeds stay small.
  corpus=$build/corpus/$short
  mkdir -p "$corpus"
  # A fixed seed and a fixed number of executions make the run reproducible
  # (a pass here is a pass in CI); SECONDS still bounds it on a slow machine,
  # which then covers a prefix of the same input sequence.
  args=(-seed="${EVLA_FUZZ_SEED:-1}" -runs="${EVLA_FUZZ_RUNS:-50000}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
        -artifact_prefix="$build/artifacts/$name-")
  [[ -f $root/fuzz/$short.dict ]] && args+=(-dict="$root/fuzz/$short.dict")
  seeds=()
  [[ -d $root/fuzz/corpus/$short ]] && seeds=("$root/fuzz/corpus/$short")
  echo "== $name for ${seconds}s"
  log=$build/$name.log
  status=0
  "$exe" "${args[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1 || status=$?
  grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units|ERROR:|^SUMMARY|^artifact_prefix|Test unit written' "$log" || true
  if [[ $status -ne 0 ]]; then
    echo "FAIL: $name exited with $status; log in $build/$name.log" >&2
    exit 1
  fi
done
echo "fuzzing passed"
