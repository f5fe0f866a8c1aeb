#!/usr/bin/python3
"""Success against speed-up over a grid of plans: what each speed-up costs at best.

    /usr/bin/python3 experiments/plan_frontier.py --model models/evla-tabletop \
        --analysis models/evla-tabletop/plans/analysis.json --token-after 3 --workers 2

Every candidate combines evla's training-free tools: LM layers dropped (chosen by
--layer-choice: greedy joint ablation, the analysis' `greedy_drop_order`, by default),
visual tokens kept after layer --token-after
(EfficientVLA's selection, relevance from the attention of the layer before), the action
head's cache interval, and optionally int8 LM layers. Each is scored in closed loop on
calibration episodes (seeds from --calib-seed, disjoint from evaluation's 0...) and timed side
by side with dense in `evla bench` runs (one thread; median over runs of p50 ratios). The plans on
the front of the calibration scores (no other plan both faster and at least as successful)
are then evaluated on the evaluation seeds, so the success reported for them is not the one
they were selected on; dense is evaluated as the reference whether or not it is on the front.

Writes the tables to --out (a data file, docs/data/plan_frontier.md, which docs/plan_frontier.md
quotes; never a hand-written doc), the chart to --svg, and every plan and raw report to --work.
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

from efficientvla_results import check_generated, cpu_name, run  # the CLI call, echoed to stderr

GENERATED = "# Success against speed-up: the plan frontier (generated tables)"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REUSED = []  # evaluation reports found in --work instead of run


def candidates(layers_total, token_after, layer_choice="greedy", search_targets=(), measure=64, validate=1000):
    """(name, evla plan arguments) over the grid; dense first; then `evla plan --target-speedup` searches."""
    out = [("dense", None)]
    for drop, tokens, cache, int8 in itertools.product((0, 2, 4), (0, 32, 16), (1, 2, 5), (False, True)):
        if not (drop or tokens or cache > 1 or int8):
            continue
        args, name = [], []
        if drop:
            args += ["--drop-layers", str(drop), "--layer-choice", layer_choice]
            name.append(f"drop {drop}")
        if tokens:
            args += ["--tokens", str(tokens), "--token-after", str(token_after)]
            name.append(f"{tokens} tokens")
        if cache > 1:
            args += ["--cache-interval", str(cache)]
            name.append(f"cache {cache}")
        if int8:
            args += ["--int8-layers", str(layers_total - drop)]
            name.append("int8")
        out.append((" + ".join(name), args))
    for t in search_targets:
        out.append((f"search {t:g}×", ["--target-speedup", f"{t:g}", "--measure", str(measure),
                                        "--validate-episodes", str(validate)]))
    return out


def evaluate(ev, model, plan, n, seed, out, workers, reuse):
    cmd = [ev, "eval", "-m", model, "-n", str(n), "--seed", str(seed), "--workers", str(workers), "-t", "1",
           "-q", "--json", out]
    if plan != "dense":
        cmd += ["--plan", plan]
    if reuse and os.path.exists(out):
        REUSED.append(out)
    else:
        run(cmd, capture_output=True)
    return json.load(open(out))["overall"]


def svg(path, rows):
    """Success against speed-up: every candidate (calibration, grey), the front (evaluation, blue), the
    searched plans (evaluation, orange)."""
    W, H, L, B = 560, 360, 56, 40
    xmax = max(2.2, max(r["speedup"] for r in rows) + 0.1)
    x = lambda v: L + (v - 1.0) / (xmax - 1.0) * (W - L - 16)
    y = lambda s: H - B - s * (H - B - 16)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{W - 8}" y2="{H - B}" stroke="black"/>',
           f'<line x1="{L}" y1="{H - B}" x2="{L}" y2="8" stroke="black"/>']
    for t in np.arange(1.0, xmax, 0.25):
        out.append(f'<text x="{x(t):.1f}" y="{H - B + 14}" text-anchor="middle">{t:.2f}×</text>')
    for s in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        out.append(f'<text x="{L - 6}" y="{y(s) + 4:.1f}" text-anchor="end">{int(100 * s)}%</text>')
        out.append(f'<line x1="{L}" y1="{y(s):.1f}" x2="{W - 8}" y2="{y(s):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{(L + W) / 2}" y="{H - 6}" text-anchor="middle">speed-up over dense (one thread)</text>')
    out.append(f'<text x="14" y="{(H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 {(H - B) / 2})">'
               f'matching success</text>')
    for r in rows:
        out.append(f'<circle cx="{x(r["speedup"]):.1f}" cy="{y(r["calib"]["success_rate"]):.1f}" r="3" fill="#aaa">'
                   f'<title>{r["name"]}</title></circle>')
    front = sorted((r for r in rows if "eval" in r and not r.get("search")), key=lambda r: r["speedup"])
    pts = " ".join(f'{x(r["speedup"]):.1f},{y(r["eval"]["success_rate"]):.1f}' for r in front)
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f6fb4" stroke-width="2"/>')
    for r in front:
        out.append(f'<circle cx="{x(r["speedup"]):.1f}" cy="{y(r["eval"]["success_rate"]):.1f}" r="4" fill="#1f6fb4">'
                   f'<title>{r["name"]}</title></circle>')
    for r in rows:
        if r.get("search"):
            out.append(f'<rect x="{x(r["speedup"]) - 4:.1f}" y="{y(r["eval"]["success_rate"]) - 4:.1f}" width="8" '
                       f'height="8" fill="#e07b00"><title>{r["name"]}</title></rect>')
    out.append(f'<text x="{W - 12}" y="{H - B - 36}" text-anchor="end" fill="#1f6fb4">grid front: evaluation seeds</text>')
    out.append(f'<text x="{W - 12}" y="{H - B - 22}" text-anchor="end" fill="#e07b00">evla plan --target-speedup: evaluation seeds</text>')
    out.append(f'<text x="{W - 12}" y="{H - B - 8}" text-anchor="end" fill="#888">every plan: calibration seeds</text>')
    with open(path, "w") as f:
        f.write("\n".join(out + ["</svg>"]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/evla-tabletop")
    ap.add_argument("--analysis", required=True, help="`evla analyze` report of the model")
    ap.add_argument("--evla", default=os.path.join(ROOT, "build", "bin", "evla"))
    ap.add_argument("--calib-episodes", type=int, default=300, help="matching calibration episodes per plan")
    ap.add_argument("--episodes", type=int, default=400, help="matching evaluation episodes per plan on the front")
    ap.add_argument("--calib-seed", type=int, default=900000)
    ap.add_argument("--eval-seed", type=int, default=0, help="first evaluation episode seed")
    ap.add_argument("--search-targets", default="",
                    help="comma list of speed-ups: plans `evla plan --target-speedup T` searches for, evaluated "
                         "beside the grid whether or not they are on its front")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bench-reps", type=int, default=40)
    ap.add_argument("--bench-runs", type=int, default=3)
    ap.add_argument("--out", default="docs/data/plan_frontier.md",
                    help="the generated tables (a data file that docs/plan_frontier.md quotes)")
    ap.add_argument("--work", default="build/plan_frontier", help="plans and raw reports")
    ap.add_argument("--svg", default="docs/img/frontier.svg", help="the chart of success against speed-up")
    ap.add_argument("--token-after", type=int, default=2,
                    help="layers that see every visual token (2: EfficientVLA's and FastV's default)")
    ap.add_argument("--layer-choice", default="greedy", choices=["greedy", "ablation", "importance"],
                    help="how `evla plan` picks the LM layers to drop")
    ap.add_argument("--reuse-evals", action="store_true",
                    help="keep evaluation reports already in --work (the same model and grid), e.g. to redo only "
                         "the timing; plans are rebuilt")
    args = ap.parse_args()
    check_generated(args.out, GENERATED)
    for d in (args.work, os.path.dirname(args.out), os.path.dirname(args.svg)):
        if d:
            os.makedirs(d, exist_ok=True)
    ev, t0 = args.evla, time.time()
    layers_total = json.load(open(os.path.join(args.model, "config.json")))["llm"]["num_hidden_layers"]

    rows = []
    targets = [float(t) for t in args.search_targets.split(",") if t]
    for i, (name, plan_args) in enumerate(candidates(layers_total, args.token_after, args.layer_choice, targets)):
        plan = "dense"
        if plan_args:
            plan = os.path.join(args.work, f"plan{i:02d}.json")
            run([ev, "plan", "-a", args.analysis, "-m", args.model, "-o", plan, "--name", f"f{i:02d}"] + plan_args,
                capture_output=True)
        info = json.loads(run([ev, "info", "-m", args.model, "--json"] + (["--plan", plan] if plan_args else []),
                              capture_output=True).stdout)
        flops = info["flops_plan" if plan_args else "flops_dense"]["total"]
        calib = evaluate(ev, args.model, plan, args.calib_episodes, args.calib_seed,
                         os.path.join(args.work, f"calib{i:02d}.json"), args.workers, args.reuse_evals)
        rows.append({"name": name, "plan": plan, "flops": flops, "calib": calib,
                     "search": bool(plan_args) and "--target-speedup" in plan_args})
        print(f"[{i + 1}] {name}: calibration {100 * calib['success_rate']:.1f}%  "
              f"({(time.time() - t0) / 60:.1f} min)", file=sys.stderr, flush=True)

    # Timing on a shared machine drifts by several percent between runs, enough to reorder
    # neighbouring plans: the speed-up is the median over --bench-runs runs, each against the
    # dense p50 of its own run.
    ratios = []
    for _ in range(args.bench_runs):
        bench = json.loads(run([ev, "bench", "-m", args.model, "--plan", ",".join(r["plan"] for r in rows), "-t",
                                "1", "-r", str(args.bench_reps), "--warmup", "3", "-o", "json"],
                               capture_output=True).stdout)
        ratios.append([bench[0]["p50_ms"] / b["p50_ms"] for b in bench])
    for r, rs in zip(rows, zip(*ratios)):
        r["speedup"] = float(np.median(rs))
        r["speedup_runs"] = list(rs)

    # The grid's front: no other grid plan at least as fast and at least as successful, and better in one.
    grid = [r for r in rows if not r["search"]]
    def dominated(r):
        s, v = r["calib"]["success_rate"], r["speedup"]
        return any(o is not r and o["speedup"] >= v and o["calib"]["success_rate"] >= s and
                   (o["speedup"] > v or o["calib"]["success_rate"] > s) for o in grid)
    for i, r in enumerate(rows):
        r["front"] = not r["search"] and not dominated(r)
        if r["front"] or r["search"] or i == 0:  # dense is the reference either way
            r["eval"] = evaluate(ev, args.model, r["plan"], args.episodes, args.eval_seed,
                                 os.path.join(args.work, f"eval{i:02d}.json"), args.workers, args.reuse_evals)
    with open(os.path.join(args.work, "rows.json"), "w") as f:
        json.dump(rows, f, indent=1)
    picture = args.svg
    svg(picture, rows)

    pct = lambda o: f"{100 * o['success_rate']:.1f}% ({100 * o['ci95'][0]:.1f}–{100 * o['ci95'][1]:.1f})"
    dense_flops = rows[0]["flops"]
    cmdline = "/usr/bin/python3 experiments/plan_frontier.py " + " ".join(sys.argv[1:])
    lines = [f"Produced by `{cmdline}` in {(time.time() - t0) / 60:.0f} min on {cpu_name()} ({os.cpu_count()} CPUs)"
             f"{f' ({len(REUSED)} evaluations reused from an earlier run)' if REUSED else ''}; "
             f"plans and raw reports in `{args.work}/`. Calibration: {args.calib_episodes} `matching` episodes from seed "
             f"{args.calib_seed}; evaluation: {args.episodes} from seed {args.eval_seed}. Speed-up: median over {args.bench_runs} "
             f"`evla bench` runs of dense's p50 over the plan's (one thread, {args.bench_reps} interleaved "
             f"repetitions each).", "",
             f"![success against speed-up]({os.path.relpath(picture, os.path.dirname(args.out) or '.')})", "",
             "The grid's front (selected on calibration, scored on evaluation) and the searched plans:", "",
             "| plan | speed-up | FLOPs % | calibration success | evaluation success (95% CI) |",
             "|---|---:|---:|---:|---:|"]
    front = [rows[0]] + sorted((r for r in rows[1:] if r["front"] or r["search"]), key=lambda r: r["speedup"])
    for r in front:
        lines.append(f"| {r['name'] + ('' if r['front'] or r['search'] else ' (reference)')} | {r['speedup']:.2f}× | {100 * r['flops'] / dense_flops:.1f}% | "
                     f"{100 * r['calib']['success_rate']:.1f}% | {pct(r['eval'])} |")
    lines += ["", "Every candidate (calibration episodes):", "",
              "| plan | speed-up | FLOPs % | calibration success (95% CI) | on the front |", "|---|---:|---:|---:|:---:|"]
    for r in sorted(rows, key=lambda r: r["speedup"]):
        lines.append(f"| {r['name']} | {r['speedup']:.2f}× | {100 * r['flops'] / dense_flops:.1f}% | "
                     f"{pct(r['calib'])} | {'yes' if r['front'] else ''} |")
    with open(args.out, "w") as f:
        f.write(GENERATED + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
