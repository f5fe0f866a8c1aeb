#!/usr/bin/env bash
# The test job: install, build, then every test suite (ctest), the PyTorch
# reference checks, and a bounded fuzzing run of the file parsers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
echo "== PyTorch reference checks"
/usr/bin/python3 python/tests/run_reference_checks.py
echo "== fuzzing the parsers (${EVLA_FUZZ_SECONDS:-30}s each)"
bash fuzz/run.sh "${EVLA_FUZZ_SECONDS:-30}"
echo "== ctest"
cd build && ctest --output-on-failure -j2
