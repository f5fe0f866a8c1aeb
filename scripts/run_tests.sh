#!/usr/bin/env bash
# The test job: install, build, then a bounded fuzzing run of the file
# parsers and every test suite through ctest (GoogleTest suites, CLI tests,
# the PyTorch reference checks), the GoogleTest suites again on the BLAS
# kernel path, then every suite built with AddressSanitizer,
# UndefinedBehaviorSanitizer and LeakSanitizer in build-asan, the Python
# tests with the sanitizer runtime preloaded (EVLA_SANITIZERS=0 skips that
# pass).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
echo "== fuzzing the parsers (${EVLA_FUZZ_SECONDS:-60}s each)"
bash fuzz/run.sh "${EVLA_FUZZ_SECONDS:-60}"
echo "== ctest"
(cd build && ctest --output-on-failure -j2)
echo "== GoogleTest suites with EVLA_KERNELS=blas (every product through OpenBLAS)"
(cd build && EVLA_KERNELS=blas ctest --output-on-failure -j2 -E '^(python|cli|train|serve)\.')
if [ "${EVLA_SANITIZERS:-1}" != 0 ]; then
  echo "== sanitizers: ASan + UBSan + LSan (build-asan)"
  start=$SECONDS
  cmake -S "$root" -B "$root/build-asan" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEVLA_SANITIZE=ON >/dev/null
  cmake --build "$root/build-asan" -j"$(nproc)"
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd build-asan &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1 \
    ctest --output-on-failure -j2 -E '^(python|train|install)\.' --timeout 900)
  # The Python tests and train.smoke (whose scripts import the module): the
  # interpreter is not instrumented, so the runtime is preloaded; CPython's
  # own allocations at exit are not leaks of ours.
  (cd build-asan &&
    LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)" \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    ctest --output-on-failure -j2 -R '^(python|train)\.' --timeout 900)
  echo "== sanitizers: $((SECONDS - start)) s"
fi
