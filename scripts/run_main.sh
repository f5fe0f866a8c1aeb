#!/usr/bin/env bash
# The main job: install, build, then run the shipped policy closed-loop on
# benchmark episodes side by side: dense, with its shipped EfficientVLA plan,
# with its int8 plan (which keeps dense's success) and with the plan `evla
# plan --target-speedup 2` searched for (docs/results.md, "The search"); then
# time all four in one process.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install_deps.sh
bash scripts/build.sh
model=models/evla-tabletop
plan=$model/plans/efficientvla.json
plans="dense,$plan,$model/plans/int8.json,$model/plans/search-2x.json"
episodes=${EVLA_EPISODES:-200}
build/bin/evla info --model "$model" --plan "$plan"
build/bin/evla eval --model "$model" --plan "$plans" --episodes "$episodes" --split matching
build/bin/evla bench --model "$model" --plan "$plans" --threads 1 --reps 20
