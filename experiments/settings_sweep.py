#!/usr/bin/python3
"""Choose a policy's inference settings — its guidance scale (config.json `cfg_scale`), the
scale of the sampler's starting noise (`noise_scale`) and how many actions of each chunk run
before it is asked again (`n_action_steps`, or CogACT's adaptive ensemble) — on validation
seeds: `evla eval` for every combination, a markdown table on stdout and a heat map (SVG, and
PNG where rsvg-convert exists).

    /usr/bin/python3 experiments/settings_sweep.py --model models/evla-tabletop \
        --cfg 1.5,2.0,2.5 --execute 4,6,8,10,12,ensemble --seeds 100000,105000 -n 400 \
        --work /tmp/sweep --svg docs/img/settings_sweep.svg

Use seeds no reported figure uses (evaluation reports start at 0, 5000, 10000; calibration
at 900000), then measure the chosen pair on the reporting seeds. Each guidance scale runs
on a copy of the model directory whose config differs in `cfg_scale` (and `noise_scale`,
where --noise-scale lists more than the model's own) alone.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys


def wilson(k, n, z=1.96):
    p = k / n
    d = 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return mid - half, mid + half


def model_with(model, cfg, noise, work):
    """A directory holding `model`'s files (links) with cfg_scale (and noise_scale unless None)
    replaced in config.json."""
    out = os.path.join(work, f"model_cfg{cfg:g}" + ("" if noise is None else f"_noise{noise:g}"))
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(model):
        src, dst = os.path.abspath(os.path.join(model, name)), os.path.join(out, name)
        if name != "config.json" and os.path.isfile(src) and not os.path.exists(dst):
            os.symlink(src, dst)
    with open(os.path.join(model, "config.json")) as f:
        config = json.load(f)
    config["action_head"]["cfg_scale"] = cfg
    if noise is not None:
        config["action_head"]["noise_scale"] = noise
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out


def row_name(row):
    cfg, noise = row
    return f"{cfg:g}" if noise is None else f"{cfg:g} / {noise:g}"


def heat_map(rows, executes, cell, title, row_title):
    cw, ch, L, T = 78, 34, 90, 56
    W, H = L + cw * len(executes) + 20, T + ch * len(rows) + 40
    rates = [cell[c, e][0] for c in rows for e in executes]
    lo, hi = min(rates), max(rates)
    best = max(cell, key=lambda k: cell[k][0])
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<text x="{L + cw * len(executes) / 2}" y="40" text-anchor="middle">actions executed per inference</text>',
           f'<text x="14" y="{T + ch * len(rows) / 2}" transform="rotate(-90 14 {T + ch * len(rows) / 2})" '
           f'text-anchor="middle">{row_title}</text>']
    for j, e in enumerate(executes):
        out.append(f'<text x="{L + cw * (j + 0.5)}" y="{T - 4}" text-anchor="middle">{e}</text>')
    for i, c in enumerate(rows):
        out.append(f'<text x="{L - 8}" y="{T + ch * (i + 0.5) + 4}" text-anchor="end">{row_name(c)}</text>')
        for j, e in enumerate(executes):
            r = cell[c, e][0]
            t = (r - lo) / (hi - lo) if hi > lo else 1.0
            fill = f"rgb({int(250 - 200 * t)},{int(250 - 90 * t)},{int(250 - 150 * t)})"
            stroke = ' stroke="black" stroke-width="2"' if (c, e) == best else ' stroke="white"'
            out.append(f'<rect x="{L + cw * j}" y="{T + ch * i}" width="{cw}" height="{ch}" fill="{fill}"{stroke}/>')
            out.append(f'<text x="{L + cw * (j + 0.5)}" y="{T + ch * (i + 0.5) + 4}" text-anchor="middle">'
                       f'{100 * r:.1f}%</text>')
    out.append(f'<text x="{L}" y="{H - 12}">black frame: the best cell</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cfg", default="1.5,2.0,2.5", help="comma list of guidance scales")
    ap.add_argument("--noise-scale", default=None,
                    help="comma list of starting-noise scales (default: the model's own, untouched)")
    ap.add_argument("--execute", default="4,6,8,10,12,ensemble",
                    help="comma list of actions per inference; 'ensemble' for the adaptive ensemble")
    ap.add_argument("--seeds", default="100000,105000", help="first seed of each block of episodes")
    ap.add_argument("--episodes", "-n", type=int, default=400, help="episodes per seed block")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--evla", default="build/bin/evla")
    ap.add_argument("--work", required=True, help="model copies and every evaluation's JSON report")
    ap.add_argument("--reuse", action="store_true", help="keep reports already in --work")
    ap.add_argument("--svg", help="write the heat map here (and a PNG beside it)")
    args = ap.parse_args()
    cfgs = [float(c) for c in args.cfg.split(",")]
    noises = [None] if args.noise_scale is None else [float(v) for v in args.noise_scale.split(",")]
    rows = [(c, v) for c in cfgs for v in noises]
    executes = args.execute.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.work, exist_ok=True)

    cell = {}
    for c, v in rows:
        model = model_with(args.model, c, v, args.work)
        for e in executes:
            k = n = 0
            for s in seeds:
                tag = f"cfg{c:g}" + ("" if v is None else f"_noise{v:g}")
                out = os.path.join(args.work, f"{tag}_exec{e}_seed{s}.json")
                mode = ["--ensemble"] if e == "ensemble" else ["--execute", str(int(e))]
                cmd = [args.evla, "eval", "-m", model, "-n", str(args.episodes), "--seed", str(s),
                       "--workers", str(args.workers), "-t", "1", "-q", "--json", out] + mode
                if not (args.reuse and os.path.exists(out)):
                    print(" ".join(cmd), file=sys.stderr, flush=True)
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
                with open(out) as f:
                    o = json.load(f)["overall"]
                k, n = k + o["successes"], n + o["episodes"]
            cell[(c, v), e] = (k / n, *wilson(k, n))

    print(f"`{args.model}`, `matching`, {args.episodes} episodes from each of seeds "
          f"{', '.join(map(str, seeds))} per cell: success (95% CI)\n")
    row_title = "CFG scale" if args.noise_scale is None else "CFG scale / noise scale"
    print(f"| {row_title} | " + " | ".join(f"{e} actions" if e != "ensemble" else "adaptive ensemble"
                                        for e in executes) + " |")
    print("|---|" + "---:|" * len(executes))
    best = max(cell, key=lambda key: cell[key][0])
    for row in rows:
        cells = []
        for e in executes:
            r, lo, hi = cell[row, e]
            txt = f"{100 * r:.1f}% ({100 * lo:.1f}–{100 * hi:.1f})"
            cells.append(f"**{txt}**" if (row, e) == best else txt)
        print(f"| {row_name(row)} | " + " | ".join(cells) + " |")
    (c, v), e = best
    noise = "" if v is None else f", noise scale {v:g}"
    print(f"\nBest: CFG {c:g}{noise}, {e} {'actions' if e != 'ensemble' else ''}".rstrip())
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(heat_map(rows, executes, cell,
                             f"{os.path.basename(os.path.normpath(args.model))}: success on validation seeds",
                             row_title))
        if shutil.which("rsvg-convert"):
            subprocess.run(["rsvg-convert", args.svg, "-o", os.path.splitext(args.svg)[0] + ".png"], check=True)


if __name__ == "__main__":
    main()
