#!/usr/bin/python3
"""Which `variants` change costs a policy its success: `evla eval` on `matching`, on
`variants` with one change at a time (`--vary F`), and on full `variants`; a markdown
table on stdout and a bar chart with 95% intervals (SVG, and PNG where rsvg-convert exists).

    /usr/bin/python3 experiments/variants_factors.py --model models/evla-tabletop -n 200 \
        --svg docs/img/variants_factors.svg

Every configuration runs the same seeds, and `--vary F` draws the same random look as the
full variant, so a row differs from `matching` in that change alone.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

FACTORS = ["light", "distractors", "shades", "camera", "surfaces"]
TASKS = ["pick", "move_near", "open_drawer", "close_drawer", "put_in_drawer"]


def run_eval(args, label, extra, work):
    out = os.path.join(work, label + ".json")
    cmd = [args.evla, "eval", "-m", args.model, "-n", str(args.episodes), "--seed", str(args.seed),
           "--workers", str(args.workers), "-t", "1", "-q", "--json", out] + extra
    print(f"[{label}] {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        return json.load(f)


def bar_chart(rows, title):
    W, H, L, R, T, B = 640, 300, 170, 60, 40, 40
    bar = (H - T - B) / len(rows)
    X = lambda v: L + (W - L - R) * v / 100
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{title}</text>']
    for v in range(0, 101, 20):
        out.append(f'<line x1="{X(v):.1f}" y1="{T}" x2="{X(v):.1f}" y2="{H - B}" stroke="#ddd"/>')
        out.append(f'<text x="{X(v):.1f}" y="{H - B + 16}" text-anchor="middle">{v}%</text>')
    for i, (label, o) in enumerate(rows):
        y = T + i * bar
        colour = "#2a6" if label == "matching" else "#c33" if label == "all (variants)" else "#47a"
        out.append(f'<text x="{L - 8}" y="{y + bar / 2 + 4:.1f}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{L}" y="{y + bar * 0.15:.1f}" width="{X(100 * o["success_rate"]) - L:.1f}" '
                   f'height="{bar * 0.7:.1f}" fill="{colour}"/>')
        lo, hi, mid = X(100 * o["ci95"][0]), X(100 * o["ci95"][1]), y + bar / 2
        out.append(f'<line x1="{lo:.1f}" y1="{mid:.1f}" x2="{hi:.1f}" y2="{mid:.1f}" stroke="#222"/>')
        for x in (lo, hi):
            out.append(f'<line x1="{x:.1f}" y1="{mid - 5:.1f}" x2="{x:.1f}" y2="{mid + 5:.1f}" stroke="#222"/>')
        out.append(f'<text x="{hi + 6:.1f}" y="{mid + 4:.1f}">{100 * o["success_rate"]:.1f}%</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--episodes", "-n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--evla", default="build/bin/evla")
    ap.add_argument("--svg", help="write the bar chart here (and a PNG beside it)")
    ap.add_argument("--work", help="keep every evaluation's JSON report here")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="evla_factors_")
    os.makedirs(work, exist_ok=True)

    configs = [("matching", [])] + [(f, ["--split", "variants", "--vary", f]) for f in FACTORS] + \
              [("all (variants)", ["--split", "variants"])]
    rows = []
    for label, extra in configs:
        rep = run_eval(args, label.split(" ")[0], extra, work)
        per_task = {t["task"]: t for t in rep["tasks"]}
        rows.append((label, rep["overall"], per_task))

    print(f"`{args.model}`, {args.episodes} episodes per row, seeds {args.seed}…\n")
    print("| changed | " + " | ".join(TASKS) + " | overall | 95% CI |")
    print("|---|" + "---:|" * (len(TASKS) + 2))
    for label, o, per_task in rows:
        cells = [f"{100 * per_task[t]['success_rate']:.1f}" if t in per_task else "" for t in TASKS]
        print(f"| {label} | " + " | ".join(cells) +
              f" | **{100 * o['success_rate']:.1f}** | {100 * o['ci95'][0]:.1f}–{100 * o['ci95'][1]:.1f} |")
    if args.svg:
        with open(args.svg, "w") as f:
            f.write(bar_chart([(label, o) for label, o, _ in rows],
                              f"{os.path.basename(os.path.normpath(args.model))}: success as one change is applied"))
        if shutil.which("rsvg-convert"):
            subprocess.run(["rsvg-convert", args.svg, "-o", os.path.splitext(args.svg)[0] + ".png"], check=True)


if __name__ == "__main__":
    main()
