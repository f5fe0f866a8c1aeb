#!/usr/bin/env bash
# SmolVLA in evla against vla.cpp on the same random-weight checkpoint, one
# process after another (never both at once), interleaved over rounds and
# thread counts, each with its peak RSS.
#
#   bash bench/compare_vla_cpp.sh VLA_BENCH GGUF EVLA_MODEL [ROUNDS] [THREADS...]
#
# VLA_BENCH: vla.cpp's vla-bench; GGUF: the checkpoint as vla.cpp's own
# converter wrote it (scripts/convert_smolvla_to_gguf.py); EVLA_MODEL: the same
# checkpoint in LeRobot's layout (bench/make_smolvla_checkpoint.py). Both get
# synthetic 512 × 512 views, one per camera of the checkpoint, and run the
# checkpoint's chunk and flow steps. evla runs twice: with a short
# instruction (its language padding dropped), and with one long enough to fill
# tokenizer_max_length, the work vla.cpp always does (it pads the language
# and masks it). Prints one line per run; the medians go to docs by hand.
set -euo pipefail
vla_bench=$1 gguf=$2 model=$3 rounds=${4:-2}
shift $(( $# < 4 ? $# : 4 ))
threads=("${@:-1 2}")
[[ ${#threads[@]} -eq 1 ]] && read -r -a threads <<<"${threads[0]}"
evla=${EVLA:-build/bin/evla}
cams=$(/usr/bin/python3 -c "import json,sys; f=json.load(open(sys.argv[1]))['input_features']; print(sum(v.get('type')=='VISUAL' for v in f.values()))" "$model/config.json")
long_prompt="pick up the red block on the left side of the wooden table and place it carefully into the blue bowl next to the green cup near the robot base, then move the yellow sponge back to the corner of the table without touching anything else"
rss() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
for round in $(seq 1 "$rounds"); do
  for t in "${threads[@]}"; do
    out=$(VLA_N_THREADS=$t /usr/bin/time -f "peak_rss_kb %M" "$vla_bench" --ckpt "$gguf" --images "$cams" --size 512 \
            --tokens 16 --warmup 2 --reps 5 2>&1 | grep -E "p50|peak_rss" | tr '\n' ' ')
    echo "round $round threads $t vla.cpp: $out"
    for prompt in "pick up the red block" "$long_prompt"; do
      out=$(/usr/bin/time -f "peak_rss_kb %M" "$evla" bench -m "$model" -t "$t" -r 5 --warmup 2 --prompt "$prompt" \
              -o csv 2>&1 | grep -E "^dense|peak_rss_kb" | tr '\n' ' ')
      echo "round $round threads $t evla ($(echo "$prompt" | wc -w) words): $out"
    done
  done
done
