#!/usr/bin/python3
"""Parity of an exported model (ctest runs it on the shipped one): C++ `evla run` vs the PyTorch reference (evla_ref) on the
same benchmark frame, instruction, state and diffusion noise (the runtime's splitmix64 +
Box-Muller stream for --seed, reproduced here).

  PYTHONPATH=python /usr/bin/python3 python/train/check_export.py --model models/evla-tabletop --evla build/bin/evla
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

from evla_ref import images  # noqa: E402
from evla_ref import model as ref  # noqa: E402

M64 = (1 << 64) - 1


def runtime_noise(seed, n):
    """src/core/rng.h: splitmix64, uniform = top 53 bits, Box-Muller cos branch, float32."""
    state = seed & M64
    out = []

    def u64():
        nonlocal state
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    for _ in range(n):
        u1 = (u64() >> 11) * (1.0 / 9007199254740992.0)
        u2 = (u64() >> 11) * (1.0 / 9007199254740992.0)
        u1 = max(u1, 1e-300)
        out.append(np.float32(math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586 * u2)))
    return np.asarray(out, np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--evla", default="build/bin/evla")
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1e-5, help="largest |C++ - PyTorch| per action value")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = ref.load_model(args.model)
    cfg = model.config
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.model, cfg["prompt"]["tokenizer"]))
    c, a = cfg["action_head"]["chunk_size"], cfg["action_head"]["action_dim"]
    size = cfg["vision"]["encoders"][0]["image_size"]
    tasks = ["pick", "move_near", "open_drawer", "close_drawer", "put_in_drawer"]
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.cases):
            task, seed = tasks[k % len(tasks)], 7 + k
            png = os.path.join(tmp, f"{k}.png")
            instr = subprocess.run([args.evla, "sim", "render", "--task", task, "--seed", str(seed), "--size",
                                    str(size), "--out", png], check=True, capture_output=True,
                                   text=True).stdout.split("  (")[0].strip()
            state = [0.0, -0.1, 0.2, 1.0]
            img = images.read_png(png)
            out = subprocess.run([args.evla, "run", "-m", args.model, "-i", png, "-p", instr, "--state",
                                  ",".join(map(str, state)), "--seed", str(seed), "-t", "1", "--json"],
                                 check=True, capture_output=True, text=True).stdout
            j = json.loads(out)
            cpp = np.asarray(j["actions"], np.float64).reshape(c, a)
            noise = runtime_noise(seed, c * a).reshape(c, a)
            ids = ref.build_prompt_ids(cfg, sp, instr)
            res = ref.forward_all(model, [img], ids, np.asarray(state, np.float32), noise)
            py = res["actions"].astype(np.float64)
            diff = np.abs(cpp - py).max()
            worst = max(worst, diff)
            print(f"{task} seed {seed} \"{instr}\": max |C++ - PyTorch| = {diff:.2e}; first action C++ "
                  f"{np.round(cpp[0], 4).tolist()} PyTorch {np.round(py[0], 4).tolist()}")
    ok = worst < args.tolerance
    print(f"worst {worst:.2e} (tolerance {args.tolerance:.0e}) -> {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
