#!/usr/bin/env bash
# The test job: install, build, then a bounded fuzzing run of the file
# parsers and every test suite through ctest (GoogleTest suites, CLI tests,
# the PyTorch reference checks).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
echo "== fuzzing the parsers (${EVLA_FUZZ_SECONDS:-60}s each)"
bash fuzz/run.sh "${EVLA_FUZZ_SECONDS:-60}"
echo "== ctest"
cd build && ctest --output-on-failure -j2
