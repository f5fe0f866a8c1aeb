"""The EfficientVLA results table on the shipped benchmark model.

    /usr/bin/python3 experiments/efficientvla_results.py --model models/evla-tabletop \
        --episodes 400 --variants-episodes 200 --bench-reps 30 --workers 2

Runs, with the evla CLI only: the redundancy analysis (`evla analyze`), one
plan per configuration (`evla plan`), closed-loop success on both benchmark
splits (`evla eval`), latency of every plan side by side in one process
(`evla bench`, median of repetitions) and analytic FLOPs (`evla info`).
Writes the markdown table to --out (a data file, docs/data/efficientvla_results.md,
which docs/results.md quotes; never a hand-written doc), the layer-importance picture to
--picture (a PNG beside it when rsvg-convert is installed), and every plan and raw JSON
report to --work.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configs(L, nv, a):
    """(name, evla plan arguments). L: LM layers, nv: visual tokens."""
    drop = a.drop_layers if a.drop_layers else max(1, round(L / 3))
    tok = a.tokens if a.tokens else max(a.token_key + 2, nv // 4)
    layers = ["--drop-layers", str(drop)]
    mlp = ["--mlp-prune", "0.25"]
    tokens = ["--tokens", str(tok)]
    cache = ["--cache-interval", "5"]
    # Below 35% of the FLOPs: vision + projector (~20% here) are untouched, so the LM must shrink
    # to ~1/5: half its layers, 1/8 of the tokens, selected after the first layer.
    aggressive = (["--drop-layers", str(max(drop + 1, L // 2))] + mlp + ["--tokens", str(max(a.token_key + 2, nv // 8)),
                  "--token-after", "1"] + cache)
    return [
        ("dense", None),
        ("tokens only", tokens),
        ("cache only", cache),
        ("layers only", layers),
        ("layers + MLP", layers + mlp),
        ("layers + tokens", layers + tokens),
        ("tokens + cache", tokens + cache),
        ("all (layers + MLP + tokens + cache)", layers + mlp + tokens + cache),
        ("baseline: random layer drop", layers + ["--layer-choice", "random", "--seed", "1"]),
        ("baseline: evenly spread layer skip", layers + ["--layer-choice", "even"]),
        ("baseline: random token drop", tokens + ["--token-method", "random", "--seed", "1"]),
        ("baseline: FastV (top-K attention)", tokens + ["--token-method", "fastv"]),
        ("baseline: random layer drop, seed 2", layers + ["--layer-choice", "random", "--seed", "2"]),
        ("baseline: random layer drop, seed 3", layers + ["--layer-choice", "random", "--seed", "3"]),
        ("layers only, chosen on the cognition token", layers + ["--layer-choice", "cognition"]),
        ("layers only, chosen by action ablation", layers + ["--layer-choice", "ablation"]),
        ("layers only, chosen by greedy joint ablation", layers + ["--layer-choice", "greedy"]),
        ("all, layers chosen by action ablation",
         layers + ["--layer-choice", "ablation"] + mlp + tokens + cache),
        ("all, aggressive (half the layers, 1/8 of the tokens after layer 1)", aggressive),
        ("int8 LM (every layer: int8 weights × 7-bit activations, integer kernel)", ["--int8-layers", str(L)]),
        # The policy's training taught layer 2's attention to find the named object (train.py
        # --attn-layers 2,4,6), so its attention ranks the visual tokens better than layer 1's.
        ("tokens only, selected after layer 3 (relevance from layer 2)", tokens + ["--token-after", "3"]),
        ("all, greedy layers, tokens after layer 3", layers + ["--layer-choice", "greedy"] + mlp + tokens
         + ["--token-after", "3"] + cache),
        ("all, ablation layers, tokens after layer 3", layers + ["--layer-choice", "ablation"] + mlp + tokens
         + ["--token-after", "3"] + cache),
        # `evla plan --target-speedup`: the ladder picks the numbers (greedy layers, tokens after 3).
        ("target 1.5× (the ladder; greedy layers, tokens after layer 3)",
         ["--target-speedup", "1.5", "--layer-choice", "greedy", "--token-after", "3"]),
        ("target 2× (the ladder; greedy layers, tokens after layer 3)",
         ["--target-speedup", "2", "--layer-choice", "greedy", "--token-after", "3"]),
    ], drop, tok


def cpu_name():
    """The CPU's model name, for the generated table's header."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "this machine"


GENERATED = "# EfficientVLA on the evla benchmark (generated table)"


def check_generated(path, header):
    """Refuses to overwrite a file this script did not write (a hand-written doc)."""
    if os.path.exists(path):
        with open(path) as f:
            if f.readline().rstrip("\n") != header:
                sys.exit(f"{path} exists and was not written by this script; not overwriting it "
                         "(give --out a data file, e.g. under docs/data/)")


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/evla-tabletop")
    ap.add_argument("--evla", default=os.path.join(ROOT, "build", "bin", "evla"))
    ap.add_argument("--episodes", type=int, default=400, help="matching episodes per configuration")
    ap.add_argument("--variants-episodes", type=int, default=200)
    ap.add_argument("--execute", type=int, default=0, help="actions per inference (0: the model's n_action_steps)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--bench-reps", type=int, default=30)
    ap.add_argument("--drop-layers", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=0)
    ap.add_argument("--token-key", type=int, default=4)
    ap.add_argument("--out", default="docs/data/efficientvla_results.md",
                    help="the generated table (a data file that docs/results.md quotes)")
    ap.add_argument("--work", default="build/efficientvla_results", help="plans and raw reports")
    ap.add_argument("--picture", default="docs/img/layer_importance.svg",
                    help="the layer-importance picture (and a PNG beside it when rsvg-convert is installed)")
    ap.add_argument("--reuse-evals", action="store_true",
                    help="keep evaluation reports already in --work (e.g. to redo only the latency run on a "
                         "quiet machine); plans are rebuilt and must come out the same")
    args = ap.parse_args()
    check_generated(args.out, GENERATED)
    for d in (args.work, os.path.dirname(args.out), os.path.dirname(args.picture)):
        if d:
            os.makedirs(d, exist_ok=True)
    ev = args.evla
    t0 = time.time()

    info = json.loads(run([ev, "info", "-m", args.model, "--json"], capture_output=True).stdout)
    cfg = json.load(open(os.path.join(args.model, "config.json")))
    L = cfg["llm"]["num_hidden_layers"]
    e0 = cfg["vision"]["encoders"][0]
    nv = (e0["image_size"] // e0["patch_size"]) ** 2 * cfg["vision"].get("num_images", 1)

    analysis = os.path.join(args.work, "analysis.json")
    run([ev, "analyze", "-m", args.model, "--episodes", "40", "--every", "3", "--samples", "300",
         "-o", analysis, "-t", "2"])
    svg = args.picture
    shutil.copy(os.path.join(args.work, "analysis.svg"), svg)
    png = None
    if shutil.which("rsvg-convert"):
        png = os.path.splitext(svg)[0] + ".png"
        run(["rsvg-convert", svg, "-o", png])

    table, drop, tok = configs(L, nv, args)
    rows = []
    plan_files = []
    for i, (name, plan_args) in enumerate(table):
        plan = "dense"
        if plan_args:
            plan = os.path.join(args.work, f"plan{i:02d}.json")
            before = open(plan).read() if os.path.exists(plan) else None
            run([ev, "plan", "-a", analysis, "-m", args.model, "-o", plan, "--name", f"p{i:02d}"] + plan_args,
                capture_output=True)
            if args.reuse_evals and before is not None and open(plan).read() != before:
                # A different plan (e.g. a --target-speedup rung after new timings): its old
                # evaluations do not describe it.
                print(f"{name}: the plan changed; evaluating it again", file=sys.stderr)
                for split in ("matching", "variants"):
                    stale = os.path.join(args.work, f"eval{i:02d}_{split}.json")
                    if os.path.exists(stale):
                        os.remove(stale)
        plan_files.append(plan)
        flops = info["flops_dense"]["total"]
        if plan != "dense":
            pi = json.loads(run([ev, "info", "-m", args.model, "--plan", plan, "--json"], capture_output=True).stdout)
            flops = pi["flops_plan"]["total"]
        res = {}
        for split, n in (("matching", args.episodes), ("variants", args.variants_episodes)):
            if n <= 0:
                continue
            out = os.path.join(args.work, f"eval{i:02d}_{split}.json")
            cmd = [ev, "eval", "-m", args.model, "--split", split, "-n", str(n), "--execute", str(args.execute),
                   "--workers", str(args.workers), "-t", "1", "-q", "--json", out]
            if plan != "dense":
                cmd += ["--plan", plan]
            if not (args.reuse_evals and os.path.exists(out)):
                run(cmd, capture_output=True)
            res[split] = json.load(open(out))
        rows.append({"name": name, "plan": plan, "flops": flops, "eval": res})

    # Latency: every plan in one process, same inputs, alternating nothing but the plan.
    bench = json.loads(run([ev, "bench", "-m", args.model, "--plan", ",".join(plan_files), "-t", "1",
                            "-r", str(args.bench_reps), "--warmup", "3", "-o", "json"], capture_output=True).stdout)
    dense_ms = bench[0]["p50_ms"]
    for r, b in zip(rows, bench):
        r["p50_ms"] = b["p50_ms"]
        r["split_ms"] = (b["vision_ms"], b["projector_ms"], b["llm_ms"], b["action_head_ms"])

    dense_flops = rows[0]["flops"]
    dm = rows[0]["eval"]["matching"]["overall"]["success_rate"]
    lines = []
    lines.append(f"Model `{os.path.basename(os.path.normpath(args.model))}`: {L} LM layers, {nv} visual tokens. "
                 f"Layers dropped: {drop} of {L}; tokens kept: {tok} of {nv}; MLP channels removed: 25%; "
                 f"action-head cache interval 5 of {cfg['action_head']['sample_steps']} steps.\n")
    lines.append(f"| configuration | matching success (95% CI) | Δ vs dense | variants success (95% CI) | "
                 f"p50 latency ms (1 thread) | speed-up | FLOPs % |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        m = r["eval"]["matching"]["overall"]
        v = r["eval"].get("variants", {}).get("overall")
        cell = lambda o: f"{100 * o['success_rate']:.1f}% ({100 * o['ci95'][0]:.1f}–{100 * o['ci95'][1]:.1f}), n={o['episodes']}"
        lines.append(f"| {r['name']} | {cell(m)} | {100 * (m['success_rate'] - dm):+.1f} | "
                     f"{cell(v) if v else '—'} | {r['p50_ms']:.2f} | {dense_ms / r['p50_ms']:.2f}× | "
                     f"{100 * r['flops'] / dense_flops:.1f}% |")
    lines.append("")
    lines.append("Latency split of the dense model (p50 ms: vision / projector / LM / action head): "
                 + " / ".join(f"{x:.2f}" for x in rows[0]["split_ms"]))
    with open(os.path.join(args.work, "rows.json"), "w") as f:
        json.dump(rows, f, indent=1)
    table_md = "\n".join(lines)
    cmdline = "/usr/bin/python3 experiments/efficientvla_results.py " + " ".join(sys.argv[1:])
    with open(args.out, "w") as f:
        f.write(GENERATED + "\n\n")
        f.write(f"Produced by `{cmdline}` in {(time.time() - t0) / 60:.0f} min on {cpu_name()} "
                f"({os.cpu_count()} CPUs); plans and raw reports in `{args.work}/`.\n\n")
        f.write(table_md + "\n\n")
        f.write(f"![layer importance]({os.path.relpath(png or svg, os.path.dirname(args.out) or '.')})\n")
    print(table_md)


if __name__ == "__main__":
    main()
