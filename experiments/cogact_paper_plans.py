"""Writes EfficientVLA's four configurations as evla plans for a CogACT-Base-
shaped model (32 LM layers, MLP width 11,008, 256 visual tokens), plus an
int8 LM, so their speed can be measured at the paper's own shape:

    /usr/bin/python3 experiments/cogact_paper_plans.py --out /tmp/paper-plans
    build/bin/evla bench -m COGACT_BASE --plan dense,/tmp/paper-plans/int8.json,... -t 2 -r 2

| plan | LM layers kept | visual tokens kept (after layer 2) | MLP channels | head cache |
|---|---|---|---|---|
| L28_T112 | 28 | 112 | 75 % | every step |
| L28_T56 | 28 | 56 | 75 % | every step |
| L22_T112 | 22 | 112 | 75 % | every step |
| L22_T56_cache5 | 22 | 56 | 75 % | refreshed every 5th step |

The paper chooses the dropped layers and kept channels from measured
redundancy; on random weights there is none to measure, so these plans drop
the deepest layers before the last (the paper finds those most redundant)
and keep the first 75 % of each MLP's channels. Which ones are dropped or
kept does not change the time, which is what these plans are for; their
success has to be measured on a trained model.
"""
import argparse
import json
import os

LAYERS, FFN = 32, 11008


def plan(name, kept_layers, tokens, cache, mlp_keep=0.75):
    dropped = list(range(LAYERS - 1 - (LAYERS - kept_layers), LAYERS - 1))
    channels = list(range(int(FFN * mlp_keep)))
    p = {"evla_plan": 1, "name": name,
         "llm": {"num_layers": LAYERS, "drop_blocks": dropped, "intermediate_size": FFN,
                 "mlp_channels": {str(l): channels for l in range(LAYERS) if l not in dropped}},
         "tokens": {"keep": tokens, "key": tokens // 4, "alpha": 0.5, "after_layer": 2, "method": "efficientvla",
                    "seed": 0}}
    if cache > 1:
        p["cache"] = {"interval": cache, "start": 0, "blocks": []}
    return p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    plans = [plan("L28_T112", 28, 112, 1), plan("L28_T56", 28, 56, 1), plan("L22_T112", 22, 112, 1),
             plan("L22_T56_cache5", 22, 56, 5),
             {"evla_plan": 1, "name": "int8", "llm": {"num_layers": LAYERS, "int8_layers": list(range(LAYERS))}}]
    for p in plans:
        path = os.path.join(args.out, p["name"] + ".json")
        with open(path + ".tmp", "w") as f:
            json.dump(p, f)
        os.replace(path + ".tmp", path)
        print(path)


if __name__ == "__main__":
    main()
