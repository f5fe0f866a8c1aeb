#!/usr/bin/python3
"""Every figure of docs/performance.md, in one run (run it on an otherwise idle machine).

    /usr/bin/python3 bench/performance_report.py --out /tmp/perf

Runs, and prints as markdown (raw outputs under --out):
  1. the machine's ceilings and the shipped model dense / with its plan / int8, 1 and 2 threads
     (`evla bench --roofline`);
  2. evla vs PyTorch eager on the shipped model, 1 and 2 threads (bench/compare_pytorch.py);
  3. a VLA-shaped random model (bench/make_vla_shaped.py: LM d=960 x 16 layers, 512 visual
     tokens): the LM's achieved GFLOP/s as a fraction of the fp32 GEMM ceiling;
  4. cold start (load + first inference) against a warm inference, 5 fresh processes each;
  5. the packed small-matrix kernel against OpenBLAS (build/bin/bench_kernels) and the whole
     model with it switched off (EVLA_KERNELS=blas);
  6. the int8 plan's action error against fp32 (bench/plan_action_error.py).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, env=None, **kw):
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/evla-tabletop")
    ap.add_argument("--plan", default="models/evla-tabletop/plans/efficientvla.json")
    ap.add_argument("--large", default="/tmp/evla-vla-shaped")
    ap.add_argument("--out", default="/tmp/evla-perf")
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    ev = os.path.join(ROOT, "build", "bin", "evla")
    cfg = json.load(open(os.path.join(ROOT, args.model, "config.json")))
    L = cfg["llm"]["num_hidden_layers"]
    int8 = os.path.join(args.out, "int8.json")
    with open(int8, "w") as f:
        json.dump({"evla_plan": 1, "name": "int8", "llm": {"num_layers": L, "int8_layers": list(range(L))}}, f)

    print("## 1. evla bench, shipped model\n")
    r = sh([ev, "bench", "-m", args.model, "--plan", f"dense,{args.plan},{int8}", "-t", "1,2", "-r",
            str(args.reps), "--roofline", "-o", "json"])
    rows = json.loads(r.stdout)
    print("\n".join(l for l in r.stderr.splitlines() if l.startswith(("roofline", "cold"))))
    print("\n| plan | threads | p50 ms | vision | projector | LM | action head | GFLOP/s | % of GEMM peak | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for x in rows:
        print(f"| {x['plan']} | {x['threads']} | {x['p50_ms']:.2f} | {x['vision_ms']:.2f} | {x['projector_ms']:.2f} | "
              f"{x['llm_ms']:.2f} | {x['action_head_ms']:.2f} | {x['gflops_per_s']:.1f} | "
              f"{x['pct_of_gemm_peak']:.0f}% | {x['peak_rss_mb']:.0f} |")

    print("\n## 2. evla vs PyTorch eager, shipped model\n")
    for t in (1, 2):
        r = sh(["/usr/bin/python3", "bench/compare_pytorch.py", args.model, "--threads", str(t), "--reps", "20",
                "--rounds", "3"])
        print(r.stdout.strip() + "\n")

    print("## 3. VLA-shaped random model: LM efficiency\n")
    if not os.path.exists(os.path.join(args.large, "model.safetensors")):
        sh(["/usr/bin/python3", "bench/make_vla_shaped.py", "--out", args.large])
    info = json.loads(sh([ev, "info", "-m", args.large, "--json"]).stdout)
    llm_gflop = info["flops_dense"]["llm"] / 1e9
    r = sh([ev, "bench", "-m", args.large, "-t", "1,2", "-r", "3", "--warmup", "1", "--roofline", "-o", "json"])
    print("\n".join(l for l in r.stderr.splitlines() if l.startswith(("roofline", "cold"))))
    print("\n| threads | LM ms (p50) | LM GFLOP | LM GFLOP/s | fp32 GEMM ceiling | LM / ceiling | whole model / ceiling |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for x in json.loads(r.stdout):
        rate = llm_gflop / (x["llm_ms"] / 1e3)
        print(f"| {x['threads']} | {x['llm_ms']:.0f} | {llm_gflop:.1f} | {rate:.1f} | {x['roofline_gemm_gflops']:.1f} | "
              f"**{100 * rate / x['roofline_gemm_gflops']:.0f}%** | {x['pct_of_gemm_peak']:.0f}% |")

    print("\n## 4. Cold start (5 fresh processes, medians)\n")
    print("| model | load ms | first inference ms | warm p50 ms | cold / warm |")
    print("|---|---:|---:|---:|---:|")
    for m, reps in ((args.model, "20"), (args.large, "2")):
        loads, firsts, warms = [], [], []
        for _ in range(5):
            x = json.loads(sh([ev, "bench", "-m", m, "-t", "1", "-r", reps, "--warmup", "0", "-o", "json"]).stdout)[0]
            loads.append(x["cold_load_ms"]), firsts.append(x["cold_first_inference_ms"]), warms.append(x["p50_ms"])
        lo, fi, wa = statistics.median(loads), statistics.median(firsts), statistics.median(warms)
        print(f"| {os.path.basename(os.path.normpath(m))} | {lo:.1f} | {fi:.1f} | {wa:.1f} | **{(lo + fi) / wa:.2f}×** |")

    print("\n## 5. Packed small-matrix kernel vs OpenBLAS\n")
    r = sh([os.path.join(ROOT, "build", "bin", "bench_kernels"), "--benchmark_repetitions=5",
            "--benchmark_report_aggregates_only=true", "--benchmark_min_time=0.1", "--benchmark_format=json"])
    rates = {}
    for b in json.loads(r.stdout)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            kind, shape = b["run_name"].split("/", 1)
            rates.setdefault(shape, {})[kind] = b["GFLOP/s"] / 1e9
    print("| M × K × N | OpenBLAS GFLOP/s | packed GFLOP/s | packed / OpenBLAS |")
    print("|---|---:|---:|---:|")
    for shape, v in rates.items():
        print(f"| {shape.replace('/', ' × ')} | {v['BLAS']:.1f} | {v['Packed']:.1f} | {v['Packed'] / v['BLAS']:.2f}× |")
    blas, packed = [], []
    for _ in range(3):
        blas.append(json.loads(sh([ev, "bench", "-m", args.model, "-t", "1", "-r", str(args.reps), "-o", "json"],
                                  env=dict(os.environ, EVLA_KERNELS="blas")).stdout)[0]["p50_ms"])
        packed.append(json.loads(sh([ev, "bench", "-m", args.model, "-t", "1", "-r", str(args.reps), "-o", "json"]
                                    ).stdout)[0]["p50_ms"])
    print(f"\nShipped model, 1 thread, p50 over 3 alternating processes: OpenBLAS everywhere "
          f"{statistics.median(blas):.2f} ms, packed kernel where it wins {statistics.median(packed):.2f} ms "
          f"({statistics.median(blas) / statistics.median(packed):.2f}×).")

    print("\n## 6. Int8 weights: action error against fp32\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "build", "python"))
    r = sh(["/usr/bin/python3", "bench/plan_action_error.py", "--model", args.model, "--plan", f"{int8},{args.plan}",
            "--episodes", "20", "--steps", "10"], env=env)
    print(r.stdout.strip())


if __name__ == "__main__":
    main()
