#!/usr/bin/python3
"""Does an exported policy's cognition feature know where the named object is, or only where
the gripper is?

    PYTHONPATH=build/python:python /usr/bin/python3 python/train/grounding_probe.py \
        --model models/evla-tabletop --data /tmp/evla_train/demos2,/tmp/evla_train/dagger2

On frames of the object tasks (pick, move_near, put_in_drawer) of every --data directory, the
runtime computes the cognition feature (the action head's only view of the scene); a linear
probe, fitted on 3/4 of the episodes of all directories together, reads the task object's xy
from it, and its error on the other episodes is reported per directory and per bin of the
gripper-object distance, next to a constant guess (the mean object position). An expert's
frames mostly have the gripper at or near the object, so a feature that tracks the gripper
scores well on them on average; the far bins, and on-policy frames (`evla sim gen --policy`),
show whether the object is actually found.

For directories with failed episodes (on-policy data), it also sorts each failed object-task
episode by how it ended: the named object lifted (but not placed), a wrong object lifted, the
gripper within 3 cm of the object at some point but nothing lifted, ended within 5 cm of a
wrong object, or never near the object (wandering).

--kept-tokens PLAN[,PLAN] runs each plan's visual-token selection on the sampled frames and
reports how often it keeps the patch that shows the named object and the one that shows the
gripper's tip (through the `matching` camera), against the chance rate kept / visual tokens.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

import policy as P  # noqa: E402
from finetune_head import runtime_pass  # noqa: E402
from train import matching_patches  # noqa: E402

OBJECT_TASKS = ("pick", "move_near", "put_in_drawer")
BINS_CM = (0, 3, 6, 10, 20, 1000)


def sample_frames(data_dir, frames, rng):
    """Up to `frames` frames of the object tasks, drawn uniformly: images, states, object xyz,
    instruction per frame and the episode index of each."""
    paths = sorted(glob.glob(os.path.join(data_dir, "shard-*.safetensors")))
    if not paths:
        sys.exit(f"--data {data_dir}: no shard-*.safetensors there")
    parts = []
    for path in paths:  # the episode lists from the headers; each shard's tensors are read once below
        names, meta = P.safetensors_io.read_header(path)
        if "target" not in names:
            sys.exit(f"--data {path}: no `target` tensor (recorded before it existed?)")
        for e in json.loads(meta["episodes"]):
            if e["task"] in OBJECT_TASKS:
                rows = np.arange(e["first_frame"], e["first_frame"] + e["frames"])
                parts.append((path, rows, e["instruction"].lower(), e["index"]))
    total = sum(len(r) for _, r, _, _ in parts)
    if total == 0:
        sys.exit(f"--data {data_dir}: no frames of {', '.join(OBJECT_TASKS)}")
    keep = np.zeros(total, bool)
    keep[rng.choice(total, min(frames, total), replace=False)] = True
    images, states, xyz, instr, episode = [], [], [], [], []
    offset, shard_path, t = 0, None, None
    for path, rows, text, ep in parts:
        chosen = rows[keep[offset:offset + len(rows)]]
        offset += len(rows)
        if not len(chosen):
            continue
        if path != shard_path:  # parts are in shard order: one shard in memory at a time
            shard_path, t = path, P.safetensors_io.read(path)[0]
        images.append(t["image"][chosen])
        states.append(t["state"][chosen].astype(np.float32))
        xyz.append(t["target"][chosen, :3].astype(np.float32))
        instr += [text] * len(chosen)
        episode.append(np.full(len(chosen), ep))
    return np.concatenate(images), np.concatenate(states), np.concatenate(xyz), instr, np.concatenate(episode)


def failure_kinds(data_dir):
    """{task: {kind: episodes}} over the object-task episodes of `data_dir` (kinds above)."""
    kinds = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "shard-*.safetensors"))):
        t, meta = P.safetensors_io.read(path)
        if "objects" not in t:
            return None
        for e in json.loads(meta["episodes"]):
            if e["task"] not in OBJECT_TASKS:
                continue
            rows = slice(e["first_frame"], e["first_frame"] + e["frames"])
            grip, objs = t["state"][rows], t["objects"][rows]
            last, real = objs[-1], objs[-1][:, 3] > 0
            lifted = real & (last[:, 2] > 0.03)
            near = np.linalg.norm(grip[-1, None, :2] - last[:, :2], axis=1)
            if e["success"]:
                kind = "solved"
            elif lifted[0]:
                kind = "object lifted"
            elif lifted[1:].any():
                kind = "wrong object lifted"
            elif (np.linalg.norm(grip[:, :2] - objs[:, 0, :2], axis=1) < 0.03).any():
                kind = "reached, not lifted"
            elif (real[1:] & (near[1:] < 0.05)).any():
                kind = "ended at a wrong object"
            else:
                kind = "never near the object"
            kinds.setdefault(e["task"], {}).setdefault(kind, 0)
            kinds[e["task"]][kind] += 1
    return kinds


def kept_shares(model_dir, plan, images, states, obj_xyz, instr):
    """Shares of frames whose object patch / gripper patch the plan's selection keeps, and the
    chance rate."""
    import evla
    policy = evla.Policy(model_dir, plan=plan, threads=1)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    enc = cfg["vision"]["encoders"][0]
    n_visual = (enc["image_size"] // enc["patch_size"]) ** 2
    obj = matching_patches(obj_xyz, enc["image_size"], enc["patch_size"])
    grip = matching_patches(states[:, :3], enc["image_size"], enc["patch_size"])
    hit_obj = hit_grip = 0
    for i in range(len(images)):
        out = policy.infer({"observation/image": images[i], "observation/state": states[i], "prompt": instr[i]})
        if "kept_visual_tokens" not in out:
            sys.exit(f"--kept-tokens {plan}: the plan selects no visual tokens")
        kept = set(out["kept_visual_tokens"].tolist())
        hit_obj += obj[i] in kept
        hit_grip += grip[i] in kept
    return hit_obj / len(images), hit_grip / len(images), len(kept) / n_visual


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="exported model directory")
    ap.add_argument("--data", required=True, help="demonstration directories, comma-separated")
    ap.add_argument("--frames", type=int, default=12000, help="frames sampled per directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kept-tokens", default=None, help="plans (comma list) whose token selection to check")
    ap.add_argument("--kept-frames", type=int, default=1000, help="frames per directory for --kept-tokens")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    dirs = args.data.split(",")
    feats, xys, dists, fit, which, kept_rows = [], [], [], [], [], []
    for k, d in enumerate(dirs):
        images, states, xyz, instr, episode = sample_frames(d, args.frames, rng)
        xy = xyz[:, :2]
        if args.kept_tokens:
            n = min(args.kept_frames, len(images))
            for plan in args.kept_tokens.split(","):
                kept_rows.append((d, plan) + kept_shares(args.model, plan, images[:n], states[:n], xyz[:n], instr[:n]))
        instructions = sorted(set(instr))
        idx = np.array([instructions.index(s) for s in instr])
        cog, _ = runtime_pass(args.model, images, states, idx, instructions, None, args.threads)
        feats.append(cog)
        xys.append(xy)
        dists.append(np.linalg.norm(states[:, :2] - xy, axis=1) * 100)
        fit.append(episode % 4 != 0)  # whole episodes on each side
        which.append(np.full(len(xy), k))
    X = np.concatenate([np.concatenate(feats), np.ones((sum(len(f) for f in feats), 1), np.float32)], 1)
    y, dist, fit, which = np.concatenate(xys), np.concatenate(dists), np.concatenate(fit), np.concatenate(which)
    w, *_ = np.linalg.lstsq(X[fit], y[fit], rcond=None)
    err = np.linalg.norm(X @ w - y, axis=1) * 100
    guess = np.linalg.norm(y - y[fit].mean(0), axis=1) * 100

    print(f"object xy from the cognition feature of {args.model}: median error, cm "
          f"(constant guess in brackets; scored on {int((~fit).sum())} frames of held-out episodes)")
    bins = list(zip(BINS_CM[:-1], BINS_CM[1:]))
    labels = [f"{lo}-{hi} cm" if hi < 1000 else f">= {lo} cm" for lo, hi in bins] + ["all"]
    print("| data | " + " | ".join(f"gripper {s}" for s in labels) + " |")
    print("|---|" + "---:|" * len(labels))
    for k, d in enumerate(dirs):
        cells = []
        for lo, hi in bins + [(0, 1e9)]:
            m = (~fit) & (which == k) & (dist >= lo) & (dist < hi)
            cells.append(f"{np.median(err[m]):.1f} ({np.median(guess[m]):.1f}), n={m.sum()}" if m.any() else "–")
        print(f"| {d} | " + " | ".join(cells) + " |")
    if kept_rows:
        print("\nvisual tokens kept by the plans' selection: share of frames that keep the patch showing ...")
        print("| data | plan | the named object | the gripper | chance |")
        print("|---|---|---:|---:|---:|")
        for d, plan, o, g, chance in kept_rows:
            print(f"| {d} | {plan} | {100 * o:.1f}% | {100 * g:.1f}% | {100 * chance:.1f}% |")
    for d in dirs:
        kinds = failure_kinds(d)
        if kinds and any(set(k) - {"solved"} for k in kinds.values()):
            print(f"\nhow the object-task episodes of {d} ended:")
            for task, k in kinds.items():
                print(f"  {task}: " + ", ".join(f"{name} {n}" for name, n in sorted(k.items(), key=lambda x: -x[1])))


if __name__ == "__main__":
    main()
