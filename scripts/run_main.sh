#!/usr/bin/env bash
# The main job: install, build, then run the shipped policy closed-loop on
# benchmark episodes, dense and with its shipped EfficientVLA plan side by
# side, and time both in one process.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
model=models/evla-tabletop
plan=$model/plans/efficientvla.json
episodes=${EVLA_EPISODES:-200}
build/bin/evla info --model "$model" --plan "$plan"
build/bin/evla eval --model "$model" --plan "dense,$plan" --episodes "$episodes" --split matching
build/bin/evla bench --model "$model" --plan "dense,$plan" --threads 1 --reps 20
