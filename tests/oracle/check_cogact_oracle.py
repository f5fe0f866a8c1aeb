"""evla against CogACT's own code (the oracle in tests/fixtures/cogact_oracle,
written by tests/oracle/make_cogact_oracle.py).

Recreates the oracle's checkpoint (tests/oracle/cogact_weights.py; its tensor
digest must be the oracle's), converts it with `evla convert cogact` to f32 and
bf16, runs every case through `evla run` with the oracle's initial noise (and
DDPM step noise), and compares every stage. Three arms:
  f32           the f32 conversion
  bf16 fp32     the bf16 conversion under a plan of fp32 products everywhere
                (the rounding of the weights alone)
  bf16          the bf16 conversion as it runs by default: BF16 products,
                activations rounded to bfloat16 too
  token ids evla makes from the instruction   identical
  vision.0/1.features, projector.out, llm.cognition, sampler.x (the sample
  after each sampling step; the worst step counts), actions.sample (the
  sampler's result), actions.normalized, actions
                                              NMSE = Σ(a−b)²/Σb² ≤ 1e-5 (f32), ≤ 1e-2 (bf16)
In the bf16 arm the DDPM case is held to that limit up to the sampler's
result (actions.sample) only: a hundred noisy steps through random weights
amplify the activations' rounding until single mid-sized elements of the
sample differ by several units (its NMSE stays ~3e-5, dominated by the large
ones), and clipping to [-1, 1] turns that into a visible change of
actions.normalized; both are still printed.
With --bindings, the same through the Python module's infer() hooks.

  /usr/bin/python3 tests/oracle/check_cogact_oracle.py --evla build/bin/evla [--bindings]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(ROOT, "tests", "fixtures", "cogact_oracle")
import cogact_weights as W  # noqa: E402

STAGES = ["vision.0.features", "vision.1.features", "projector.out", "llm.cognition", "sampler.x",
          "actions.sample", "actions.normalized", "actions"]
LIMIT = {"f32": 1e-5, "bf16 fp32": 1e-2, "bf16": 1e-2}
FP32_EVERYWHERE = {"evla_plan": 1, "name": "fp32 products",
                   "precision": {m: "fp32" for m in ("vision", "projector", "llm", "action_head")}}


def nmse(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        return float("inf")
    return float(((a - b) ** 2).sum() / max((b ** 2).sum(), 1e-30))


def sampler_sets(case):
    s = [f"action_head.sampler={case['sampler']}", f"action_head.cfg_scale={case['cfg']}"]
    if case["sampler"] == "ddim":
        s.append(f"action_head.sample_steps={case['steps']}")
    return s


def variant(case):
    return f"{case['sampler']}{case['steps']}_cfg{case['cfg']}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--evla", required=True)
    ap.add_argument("--bindings", action="store_true", help="check the Python module's infer() hooks instead of the CLI")
    ap.add_argument("--keep", help="keep the work directory here")
    args = ap.parse_args()
    oracle = json.load(open(os.path.join(FIX, "oracle.json"), encoding="utf-8"))
    instructions = json.load(open(os.path.join(FIX, "instructions.json"), encoding="utf-8"))
    tmp = args.keep or tempfile.mkdtemp(prefix="cogact_oracle.")
    os.makedirs(tmp, exist_ok=True)
    failures = []
    try:
        src = os.path.join(tmp, "release")
        digest = W.digest(W.write(src, oracle["weights_seed"]))
        if digest != oracle["weights_digest"]:
            sys.exit(f"cogact_weights.py made other tensors than the oracle's (digest {digest}, "
                     f"oracle {oracle['weights_digest']}): regenerate the oracle or fix the writer")
        sets = [x for s in oracle["convert_sets"] for x in ("--set", s)]
        models = {}
        for dtype in ("f32", "bf16"):
            for case in oracle["cases"]:
                key = (dtype, variant(case))
                if key in models:
                    continue
                out = os.path.join(tmp, f"{dtype}-{variant(case)}")
                subprocess.run([args.evla, "convert", "cogact", "-c", os.path.join(src, "ckpt.pt"),
                                "--config", os.path.join(src, "config.json"),
                                "--stats", os.path.join(src, "dataset_statistics.json"),
                                "--tokenizer", os.path.join(FIX, "tokenizer.model"), "--dtype", dtype, "-q",
                                *sets, *[x for s in sampler_sets(case) for x in ("--set", s)], "-o", out],
                               check=True, stdout=subprocess.DEVNULL)
                models[key] = out

        if args.bindings:
            import evla
        rows = []
        plan = os.path.join(tmp, "fp32_everywhere.json")
        with open(plan, "w") as f:
            json.dump(FP32_EVERYWHERE, f)
        for arm in ("f32", "bf16 fp32", "bf16"):
            dtype = arm.split()[0]
            arm_plan = plan if arm == "bf16 fp32" else None
            for case in oracle["cases"]:
                cdir = os.path.join(FIX, "cases", case["name"])
                expect = {k: np.load(os.path.join(cdir, k + ".npy")) for k in STAGES + ["token_ids"]}
                model = models[(dtype, variant(case))]
                instruction = instructions[case["instruction"]]
                if args.bindings:
                    pol = evla.Policy(model, plan=arm_plan, threads=2)
                    img = evla.load_image(os.path.join(FIX, case["image"]))
                    kw = dict(noise=np.load(os.path.join(cdir, "noise.npy")), unnorm_key=case["unnorm_key"],
                              intermediates=True)
                    if case["sampler"] == "ddpm":
                        kw["step_noise"] = np.load(os.path.join(cdir, "step_noise.npy"))
                    r = pol.infer({"observation/image": img, "prompt": instruction}, **kw)
                    got = dict(r["intermediates"])
                    assert np.array_equal(got["actions"], r["actions"].ravel())
                    # The given token ids give the same inference.
                    r2 = pol.infer({"observation/image": img, "prompt": "ignored"},
                                   token_ids=[int(i) for i in expect["token_ids"]], **kw)
                    assert np.array_equal(r2["actions"], r["actions"]), "token_ids= changed the actions"
                else:
                    dump = os.path.join(tmp, "dump", arm.replace(" ", "_"), case["name"])
                    cmd = [args.evla, "run", "-m", model, "-i", os.path.join(FIX, case["image"]), "-p", instruction,
                           "--unnorm-key", case["unnorm_key"], "-t", "2", "--json",
                           "--noise", os.path.join(cdir, "noise.npy"), "--dump", dump]
                    if arm_plan:
                        cmd += ["--plan", arm_plan]
                    if case["sampler"] == "ddpm":
                        cmd += ["--step-noise", os.path.join(cdir, "step_noise.npy")]
                    run = subprocess.run(cmd, check=True, capture_output=True)
                    got = {k[:-4]: np.load(os.path.join(dump, k)) for k in os.listdir(dump)}
                    printed = np.array(json.loads(run.stdout)["actions"], np.float32)
                    assert np.array_equal(printed.ravel(), got["actions"]), "--dump's actions are not the printed ones"
                    assert np.array_equal(got["noise"], np.load(os.path.join(cdir, "noise.npy")).ravel())
                    # The oracle's token ids given directly give the same inference.
                    ids = ",".join(str(int(i)) for i in expect["token_ids"])
                    cmd2 = [x for x in cmd if x not in ("--dump", dump)]
                    cmd2[cmd2.index("-p") + 1] = "ignored"
                    again = subprocess.run(cmd2 + ["--token-ids", ids], check=True, capture_output=True)
                    again = np.array(json.loads(again.stdout)["actions"], np.float32)
                    assert np.array_equal(again, printed), "--token-ids changed the actions"
                if not np.array_equal(got["token_ids"], expect["token_ids"]):
                    failures.append(f"{arm} {case['name']}: token ids {got['token_ids'].tolist()} "
                                    f"but CogACT's are {expect['token_ids'].tolist()}")
                # The sample after each sampling step: the worst step's NMSE.
                n_steps = len(expect["sampler.x"])
                got["sampler.x"] = [got.get(f"dit.x.{i}") for i in range(n_steps)]
                if any(x is None for x in got["sampler.x"]) or f"dit.x.{n_steps}" in got:
                    failures.append(f"{arm} {case['name']}: evla ran another number of sampling steps than {n_steps}")
                    got["sampler.x"] = [np.full(expect["sampler.x"][0].size, np.inf)] * n_steps
                errs = {s: nmse(got[s], expect[s]) for s in STAGES if s != "sampler.x"}
                errs["sampler.x"] = max(nmse(a, b) for a, b in zip(got["sampler.x"], expect["sampler.x"]))
                checked = STAGES
                if arm == "bf16" and case["sampler"] == "ddpm":
                    checked = STAGES[:STAGES.index("actions.sample") + 1]
                for s, e in errs.items():
                    if s in checked and not e <= LIMIT[arm]:
                        failures.append(f"{arm} {case['name']}: {s} NMSE {e:.3g} > {LIMIT[arm]:g}")
                rows.append((arm, case["name"], errs))
        print("| arm | case | " + " | ".join(STAGES) + " |")
        print("|---|---|" + "---|" * len(STAGES))
        for dtype, name, errs in rows:
            print(f"| {dtype} | {name} | " + " | ".join(f"{errs[s]:.2e}" for s in STAGES) + " |")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print("cogact oracle ok" + (" (bindings)" if args.bindings else ""))


if __name__ == "__main__":
    main()
