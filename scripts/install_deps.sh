#!/usr/bin/env bash
# Installs the Debian bookworm packages evla builds, tests and runs with.
# Idempotent: a machine that has them all skips apt entirely.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git
      libopenblas-dev nlohmann-json3-dev libcli11-dev libfmt-dev
      libsentencepiece-dev libzip-dev libicu-dev libpng-dev libjpeg-dev libstb-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      libboost-dev libmsgpack-cxx-dev pybind11-dev python3-dev
      python3-numpy python3-torch python3-sentencepiece python3-msgpack python3-websockets
      clang libclang-rt-14-dev nginx)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
