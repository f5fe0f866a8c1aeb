#!/usr/bin/env bash
# Installs the build into a scratch prefix, builds a separate CMake project
# against it with find_package(evla), and checks it computes what the CLI does.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/evla/evla.h" && test -x "$tmp/prefix/bin/evla"
! ls "$tmp/prefix/include" | grep -qv '^evla$'  # the public headers only
cmake -S "$src/tests/install/consumer" -B "$tmp/b" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/b" >/dev/null
model=$src/models/evla-tiny-random
got=$("$tmp/b/consumer" "$model" "$model/example.png")
want=$("$tmp/prefix/bin/evla" run -m "$model" -i "$model/example.png" -p "pick up the red block" -t 1 --json |
       /usr/bin/python3 -c 'import json,sys; a=json.load(sys.stdin)["actions"]; print(f"{len(a)} x {len(a[0])} actions, first {a[0][0]:.6f}")')
[[ "$got" == "$want" ]] || { echo "consumer: $got"; echo "cli:      $want"; exit 1; }
echo "install ok: $got"
