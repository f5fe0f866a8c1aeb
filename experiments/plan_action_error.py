#!/usr/bin/python3
"""How far each plan's actions move from the dense policy's, on benchmark observations.

    PYTHONPATH=build/python /usr/bin/python3 experiments/plan_action_error.py --model models/evla-tabletop \\
        --plan plans/int8.json,plans/efficientvla.json --episodes 20 --steps 12

Rolls the dense policy out on `matching` episodes (every task in turn) and, at
each step, asks every plan for the same observation with the same diffusion
seed. Prints per plan the NMSE of its action chunks against dense,
sum((a - d)^2) / sum(d^2), and the mean absolute difference per action
dimension, as a markdown table. Plans that only skip work (cache interval 1)
give exactly 0.
"""
import argparse
import os
import sys

import numpy as np

import evla


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/evla-tabletop")
    ap.add_argument("--plan", required=True, help="comma list of plan files")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=12, help="observations per episode (dense rolls out 4 actions each)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    dense = evla.Policy(args.model, threads=args.threads)
    plans = [(p, evla.Policy(args.model, plan=p, threads=args.threads)) for p in args.plan.split(",")]
    meta = dense.metadata
    image_key, state_key, prompt_key = meta["image_keys"][0], meta.get("state_key"), meta["prompt_key"]
    size = meta["image_size"]
    tasks = evla.sim.tasks()
    num = {p: 0.0 for p, _ in plans}
    den = 0.0
    absdiff = {p: 0.0 for p, _ in plans}
    count = 0
    for e in range(args.episodes):
        env = evla.sim.Env("matching", tasks[e % len(tasks)], e)
        for t in range(args.steps):
            if env.done:
                break
            obs = {image_key: env.render(size, size), prompt_key: env.instruction, meta["seed_key"]: 1000 * e + t}
            if meta.get("state_dim", 0):
                obs[state_key] = env.state()
            d = dense.infer(obs)["actions"].astype(np.float64)
            den += float((d ** 2).sum())
            for p, pol in plans:
                a = pol.infer(obs)["actions"].astype(np.float64)
                num[p] += float(((a - d) ** 2).sum())
                absdiff[p] = absdiff[p] + np.abs(a - d).mean(axis=0)
            count += 1
            for a in d[:4]:
                if env.done:
                    break
                env.step(a.astype(np.float32))
    print(f"model {args.model}, {count} observations from {args.episodes} matching episodes\n")
    print("| plan | action NMSE vs dense | mean abs. difference per action dim |")
    print("|---|---:|---|")
    for p, _ in plans:
        dims = ", ".join(f"{v:.2e}" for v in absdiff[p] / max(count, 1))
        print(f"| {os.path.basename(p)} | {num[p] / den:.2e} | {dims} |")


if __name__ == "__main__":
    sys.exit(main())
