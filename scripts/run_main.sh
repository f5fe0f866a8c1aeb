#!/usr/bin/env bash
# The main job: install, build, then run the shipped default model.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
model=models/evla-tiny-random
build/bin/evla info --model "$model"
build/bin/evla run --model "$model" --image "$model/example.png" \
  --prompt "put the eggplant in the basket" --seed 0 --repeat 20
