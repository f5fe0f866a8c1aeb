#!/usr/bin/python3
"""Trains the action head alone on a frozen backbone's cognition features.

    /usr/bin/python3 python/train/finetune_head.py --ckpt /tmp/evla_train/r12/ckpt.pt \
        --data /tmp/evla_train/demos2 --model /tmp/evla_train/r12/export \
        --features /tmp/evla_train/r12/features.npz --out /tmp/evla_train/r12h/export

The joint runs (train.py) move the backbone's feature every step, so the action head always
chases a moving input; with the backbone frozen, its feature for every training frame is
computed once by the runtime from the checkpoint's export (cached in --features) and the head is trained on
them with large batches at a small fraction of a joint step's cost. Same loss as train.py
(eps-prediction, condition dropout for CFG, optional state dropout). The export is the
checkpoint's EMA policy with the fine-tuned head (EMA of its weights) in place of its own;
--head-size trains a head of another size from scratch instead.
"""
import argparse
import copy
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import policy as P  # noqa: E402
from train import load_demos, log, normalize_actions, optimizer_step  # noqa: E402


def load_trainable(ck, cfg, state_mean, state_std, with_head=True, seed=0):
    """The checkpoint's EMA weights in a Trainable of config `cfg` (training-only heads
    ignored); with_head=False keeps the action head at its fresh initialisation."""
    m = P.Trainable(cfg, state_mean, state_std)
    P.init_weights(m.policy, seed)
    m.load_state_dict({k: v for k, v in ck["ema"].items() if with_head or not k.startswith("policy.dit.")},
                      strict=False)
    return m.eval()


def features(model_dir, images, states, instr_idx, instructions, lf, threads=2):
    """Cognition features [N, d] of every frame from the C++ runtime (`import evla`; its
    parity with the PyTorch reference is tested), one policy per thread, with progress."""
    import evla
    policies = [evla.Policy(model_dir, threads=1) for _ in range(threads)]
    d = policies[0].infer({"observation/image": images[0], "observation/state": states[0],
                           "prompt": instructions[instr_idx[0]]})["cognition"].shape[0]
    out = np.zeros((len(images), d), np.float32)
    t0 = time.time()

    def run(k):
        p = policies[k]
        for i in range(k, len(images), threads):
            out[i] = p.infer({"observation/image": images[i], "observation/state": states[i],
                              "prompt": instructions[instr_idx[i]]})["cognition"]
            if k == 0 and i % 10000 < threads:
                el = time.time() - t0
                log(lf, f"features {i}/{len(images)} {el:.0f} s, ETA {el / max(i, 1) * (len(images) - i):.0f} s")
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, range(threads)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="train.py checkpoint (its EMA weights are used)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the checkpoint's export (runs the features; its tokenizer)")
    ap.add_argument("--out", required=True, help="exported model directory")
    ap.add_argument("--features", default=None, help="cache of the cognition features (.npz)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--time-budget", type=float, default=1e9, help="seconds; the schedule also ends on it")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--state-drop", type=float, default=0.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--reinit", action="store_true", help="start the head from a fresh init, not the checkpoint's")
    ap.add_argument("--head-size", default=None,
                    help="JSON overrides of the action head's config (e.g. hidden_size, num_layers, num_heads); "
                         "implies --reinit")
    ap.add_argument("--holdout", type=float, default=0.05, help="share of frames held out for the eval loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    lf = open(args.log, "a") if args.log else None
    log(lf, "args: " + json.dumps(vars(args)))

    ck = torch.load(args.ckpt)
    cfg = copy.deepcopy(ck["cfg"])
    if args.head_size:
        cfg["action_head"].update(json.loads(args.head_size))
        args.reinit = True
    images, states, actions, _, instr_idx, instructions, *_ = load_demos(args.data, 10 ** 9)
    n = len(images)
    model = load_trainable(ck, cfg, states.mean(0), states.std(0) + 1e-6, with_head=not args.reinit, seed=args.seed)
    if args.features and os.path.exists(args.features):
        cog = np.load(args.features)["cog"]
        if cog.shape[0] != n:
            sys.exit(f"--features {args.features}: {cog.shape[0]} rows, the data has {n} frames")
        log(lf, f"features from {args.features}")
    else:
        cog = features(args.model, images, states, instr_idx, instructions, lf, args.threads)
        if args.features:
            np.savez(args.features, cog=cog)
    del images

    an = cfg["action_normalization"]
    norm = normalize_actions(actions, np.array(an["q01"]), np.array(an["q99"]))

    # Held-out frames: a contiguous tail (frames are in episode order), so whole episodes
    # except the one at the boundary.
    n_hold = int(n * args.holdout)
    train_rows = np.arange(n - n_hold)
    hold_rows = np.arange(n - n_hold, n)
    cog_t, st_t, act_t = torch.from_numpy(cog), torch.from_numpy(states), torch.from_numpy(norm)

    dit = model.policy.dit
    for p in model.parameters():
        p.requires_grad_(False)
    for p in dit.parameters():
        p.requires_grad_(True)
    ema = copy.deepcopy(dit)
    opt = torch.optim.AdamW(dit.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)

    def eval_loss():
        """The EMA head's eps-MSE on the held-out frames, with fixed noise."""
        torch_state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            rows = torch.from_numpy(hold_rows[:4096])
            loss = model.diffusion_loss(cog_t[rows], st_t[rows], act_t[rows], 4, 0.0, 0.0, dit=ema).item()
        torch.set_rng_state(torch_state)
        return loss

    log(lf, f"head fine-tune: {len(train_rows)} train / {len(hold_rows)} held-out frames; "
            f"held-out eps-MSE at start {eval_loss():.4f}")
    t0 = time.time()
    step, losses = 0, []
    progress = 0.0
    while progress < 1.0:
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * progress)) * min(1.0, (step + 1) / 200)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = torch.from_numpy(rng.choice(train_rows, args.batch))
        loss = model.diffusion_loss(cog_t[rows], st_t[rows], act_t[rows], 1, args.cond_drop, args.state_drop)
        optimizer_step(opt, loss, dit, ema, args.ema, step)
        step += 1
        losses.append(loss.item())
        progress = max(step / args.steps, (time.time() - t0) / args.time_budget)
        if step % 1000 == 0:
            log(lf, f"step {step} loss {np.mean(losses[-1000:]):.4f} held-out {eval_loss():.4f} lr {lr:.2e} "
                    f"{(time.time() - t0) / 60:.1f} min progress {100 * progress:.1f}%")
    model.policy.dit = ema
    with open(os.path.join(args.model, "tokenizer.model"), "rb") as f:
        tok = f.read()
    P.export(model, cfg, tok, args.out)
    log(lf, f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; held-out {eval_loss():.4f}; "
            f"exported to {args.out}")


if __name__ == "__main__":
    main()
