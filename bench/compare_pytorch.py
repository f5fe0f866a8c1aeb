"""evla vs PyTorch eager on the same model, inputs and thread count.

    /usr/bin/python3 bench/compare_pytorch.py models/evla-tiny-random --threads 2 --reps 20

Runs bench/pytorch_latency.py (the reference implementation in eager mode)
and `evla bench` one after the other, alternating several rounds so that
drifting machine load hits both alike, and prints per-module medians and the
evla / PyTorch latency ratio as a markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = ["vision", "projector", "llm", "action_head", "total"]


def run_pytorch(model, threads, reps):
    # Debian's torch does its matrix products in OpenBLAS, whose own thread pool
    # torch.set_num_threads does not size: left alone it starts one thread per
    # core, which fight each other (and anything else running) for the cores.
    # The reference package (python/) importable, whatever the caller's PYTHONPATH.
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), os.path.join(ROOT, "python")) if p)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=path)
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "pytorch_latency.py"), model,
                          "--threads", str(threads), "--reps", str(reps), "--warmup", "3"],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out)


def run_evla(evla, model, threads, reps):
    out = subprocess.run([evla, "bench", "--model", model, "--threads", str(threads), "--reps", str(reps),
                          "--warmup", "3", "-o", "json", "--prompt", "put the eggplant in the basket"],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)[0]
    return {"vision": r["vision_ms"], "projector": r["projector_ms"], "llm": r["llm_ms"],
            "action_head": r["action_head_ms"], "total": r["p50_ms"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20, help="timed runs per round (each side)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--evla", default=os.path.join(ROOT, "build", "bin", "evla"))
    args = ap.parse_args()
    torch_rounds, evla_rounds = [], []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        torch_rounds.append(run_pytorch(args.model, args.threads, args.reps))
        evla_rounds.append(run_evla(args.evla, args.model, args.threads, args.reps))
    med = lambda rounds, m: statistics.median(x[m] for x in rounds)
    print(f"model `{os.path.basename(os.path.normpath(args.model))}`, {args.threads} threads, "
          f"{args.rounds} rounds × {args.reps} reps, median of round medians\n")
    print("| module | PyTorch eager ms | evla ms | evla / PyTorch |")
    print("|---|---:|---:|---:|")
    for m in MODULES:
        t, e = med(torch_rounds, m), med(evla_rounds, m)
        print(f"| {m} | {t:.2f} | {e:.2f} | {e / t:.2f}× |")


if __name__ == "__main__":
    main()
