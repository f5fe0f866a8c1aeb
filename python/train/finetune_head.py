#!/usr/bin/python3
"""Trains the action head, and optionally the LM's top layers, on a frozen backbone.

    PYTHONPATH=python /usr/bin/python3 python/train/finetune_head.py --ckpt /tmp/evla_train/r12/ckpt.pt \
        --data /tmp/evla_train/demos2 --model /tmp/evla_train/r12/export \
        --features /tmp/evla_train/r12/features.npz --out /tmp/evla_train/r12h/export

The joint runs (train.py) move the backbone's feature every step, so the action head always
chases a moving input; with the backbone frozen, its feature for every training frame is
computed once by the runtime from the checkpoint's export (cached in --features) and the head is trained on
them with large batches at a small fraction of a joint step's cost. Same loss as train.py
(eps-prediction, condition dropout for CFG, optional state dropout). The export is the
checkpoint's EMA policy with the fine-tuned head (EMA of its weights) in place of its own;
--head-size trains a head of another size from scratch instead.

--lm-layers L also trains the LM's last L layers and its final norm with the head, from
inputs of layer (layers - L) for every token, computed once by the runtime and cached as
fp16 (2.5 GB for the 147,685 frames of the shipped data): the action loss then
reaches the attention that reads the visual tokens into the cognition token, at a cost
close to the head's own for L = 1 (the last layer only computes the cognition row).
--aux-weight adds train.py's auxiliary position regression on the cognition feature, so those
layers also get a direct signal of where the named object is.
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

import policy as P  # noqa: E402
from train import colour_jitter, load_demos, log, normalize_actions, optimizer_step, prompt_table  # noqa: E402


def load_trainable(ck, cfg, state_mean, state_std, with_head=True, seed=0, aux=False):
    """The checkpoint's EMA weights in a Trainable of config `cfg` (training-only heads
    ignored, except the auxiliary position head with aux); with_head=False keeps the action
    head at its fresh initialisation."""
    m = P.Trainable(cfg, state_mean, state_std, aux_dim=9 if aux else 0)
    P.init_weights(m.policy, seed)
    m.load_state_dict({k: v for k, v in ck["ema"].items() if with_head or not k.startswith("policy.dit.")},
                      strict=False)
    return m.eval()


def runtime_pass(model_dir, images, states, instr_idx, instructions, lf, threads=2, lm_layer=None, text_len=None):
    """Every frame through the C++ runtime (`import evla`; its parity with the PyTorch reference
    is tested), one policy per thread, with progress: the cognition features [N, d], or with
    lm_layer the input of that LM layer for every token ([N, tokens, d] fp16, right-padded as
    the prompts differ in length; text_len: prompt tokens after the BOS per instruction) and each
    frame's cognition index [N]."""
    import evla
    policies = [evla.Policy(model_dir, threads=1) for _ in range(threads)]
    kw = {} if lm_layer is None else {"lm_layer_input": lm_layer}

    def infer(p, i):
        return p.infer({"observation/image": images[i], "observation/state": states[i],
                        "prompt": instructions[instr_idx[i]]}, **kw)
    first = infer(policies[0], 0)
    d = first["cognition"].shape[0]
    if lm_layer is None:
        out, last = np.zeros((len(images), d), np.float32), None
    else:
        width = first["lm_layer_input"].shape[0] - text_len[instr_idx[0]] + max(text_len)
        out = np.zeros((len(images), width, d), np.float16)
        last = np.zeros(len(images), np.int64)
    t0 = time.time()

    def run(k):
        p = policies[k]
        for i in range(k, len(images), threads):
            r = infer(p, i)
            if lm_layer is None:
                out[i] = r["cognition"]
            else:
                h = r["lm_layer_input"]
                out[i, :len(h)] = h
                last[i] = len(h) - 1
            if k == 0 and i % 10000 < threads:
                el = time.time() - t0
                log(lf, f"runtime pass {i}/{len(images)} {el:.0f} s, ETA {el / max(i, 1) * (len(images) - i):.0f} s")
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(run, range(threads)))
    return out, last


def jittered(images, seed, chunk=4096):
    """A colour-jittered copy of uint8 frames [N,H,W,3] (train.py's augmentation, seeded)."""
    gen = torch.Generator().manual_seed(seed)
    out = np.empty_like(images)
    for b0 in range(0, len(images), chunk):
        x = torch.from_numpy(images[b0:b0 + chunk]).permute(0, 3, 1, 2).float() / 255.0
        y = (colour_jitter(x, gen) * 255.0).round().to(torch.uint8)
        out[b0:b0 + chunk] = y.permute(0, 2, 3, 1).numpy()
    return out


def save_cache(path, **arrays):
    """np.savez to a temporary file, then renamed over `path`: a stopped run leaves the old cache."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def prompt_lengths(model_dir, cfg, instructions):
    """Prompt tokens after the BOS of each instruction, with the model's tokenizer."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "tokenizer.model"))
    return prompt_table(cfg, sp, instructions)[1].tolist()


def cached_features(path, rows, start, args, cfg, images, states, instr_idx, instructions, lf):
    """Features of frames `rows` (one --data directory) from their cache at `path`, or computed by
    the runtime and cached there: (features, cognition index or None, the loaded cache or None)."""
    n = rows.stop - rows.start
    cache = np.load(path) if path and os.path.exists(path) else None
    if cache is not None:
        cached = int(cache["start"]) if "start" in cache.files else cfg["llm"]["num_hidden_layers"]
        if cached != start:
            sys.exit(f"--features {path}: cached for layer {cached}, --lm-layers {args.lm_layers} needs layer {start}")
        feats = cache["h"] if args.lm_layers else cache["cog"]
        last = cache["last"] if args.lm_layers else None
        if feats.shape[0] != n:
            sys.exit(f"--features {path}: {feats.shape[0]} rows, its data has {n} frames")
        log(lf, (f"layer-{start} inputs" if args.lm_layers else "cognition features") + f" from {path}")
        return feats, last, cache
    feats, last = runtime_pass(args.model, images[rows], states[rows], instr_idx[rows], instructions, lf, args.threads,
                               *((start, prompt_lengths(args.model, cfg, instructions)) if args.lm_layers else ()))
    if path:
        save_cache(path, **({"h": feats, "last": last} if args.lm_layers else {"cog": feats}), start=start)
    return feats, last, None


def check_top_layers(model, model_dir, images, states, instr_idx, instructions, feats, last, start, lf, firsts=()):
    """The PyTorch top layers on the cached inputs must give the runtime's cognition feature
    (a stale cache, another tokenizer or an fp16 overflow would not): the first frame of
    each instruction, so prompts of different lengths (padding) are covered, and `firsts`,
    the first frame of each --data directory, so every cache is checked."""
    rows = np.union1d(np.unique(instr_idx, return_index=True)[1][:32], np.asarray(firsts, np.int64))
    want, _ = runtime_pass(model_dir, images[rows], states[rows], instr_idx[rows], instructions, None, 1)
    llm = model.policy.llm.model
    with torch.no_grad():
        got = model.cognition_from_layer(torch.from_numpy(feats[rows]).float(), torch.from_numpy(last[rows]),
                                         llm.layers[start:], llm.norm)
    nmse = ((got.numpy() - want) ** 2).sum() / (want ** 2).sum()
    log(lf, f"cognition from the cached layer-{start} inputs vs the runtime's: NMSE {nmse:.2e} "
            f"({len(rows)} frames)")
    if not nmse < 1e-4:
        sys.exit(f"the cached layer-{start} inputs do not reproduce {model_dir}'s cognition feature "
                 f"(NMSE {nmse:.2e}): a cache of another model?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="train.py checkpoint (its EMA weights are used)")
    ap.add_argument("--data", required=True, help="demonstration directory, or a comma list of them")
    ap.add_argument("--model", required=True, help="the checkpoint's export (runs the features; its tokenizer)")
    ap.add_argument("--out", required=True, help="exported model directory")
    ap.add_argument("--features", default=None, help="cache (.npz) of the cognition features, or with --lm-layers of the layer inputs; "
                         "a comma list with one cache per --data directory")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--time-budget", type=float, default=1e9, help="seconds; the schedule also ends on it")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--state-drop", type=float, default=0.0)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--init-head", default=None, help="start the head from this exported model's head")
    ap.add_argument("--init-model", default=None,
                    help="start every weight from this exported model (e.g. an earlier stage; normally --model)")
    ap.add_argument("--reinit", action="store_true", help="start the head from a fresh init, not the checkpoint's")
    ap.add_argument("--head-size", default=None,
                    help="JSON overrides of the action head's config (e.g. hidden_size, num_layers, num_heads); "
                         "implies --reinit")
    ap.add_argument("--lm-layers", type=int, default=0, help="also train the LM's last L layers and final norm")
    ap.add_argument("--aux-weight", type=float, default=0.0,
                    help="with --lm-layers: also train train.py's auxiliary position regression from the "
                         "cognition feature (its head from the checkpoint), so the top layers get a direct "
                         "signal of where the named object is")
    ap.add_argument("--repeats", type=int, default=1, help="diffusion samples per cognition feature")
    ap.add_argument("--augment-copies", type=int, default=0,
                    help="also cache the features of this many colour-jittered copies of every frame (as "
                         "train.py augments) and train on a random copy or the clean frame (head only)")
    ap.add_argument("--holdout", type=float, default=0.05, help="share of frames held out for the eval loss")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()

    P.set_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    lf = open(args.log, "a") if args.log else None
    log(lf, "args: " + json.dumps(vars(args)))

    ck = torch.load(args.ckpt)
    cfg = copy.deepcopy(ck["cfg"])
    if args.head_size:
        cfg["action_head"].update(json.loads(args.head_size))
        args.reinit = True
    # Images are needed only to compute features (a cache missing), to check the top layers
    # (--lm-layers) or for jittered copies; skipping them halves the memory of a large head stage.
    caches = args.features.split(",") if args.features else []
    need_images = bool(args.lm_layers or args.augment_copies or not caches or not all(map(os.path.exists, caches)))
    images, states, actions, targets, instr_idx, instructions, *_, dir_frames = load_demos(
        args.data, 10 ** 9, with_images=need_images)
    if not need_images:
        log(lf, "images not loaded: every feature is cached")
    n = len(states)
    if args.aux_weight and (not args.lm_layers or targets is None):
        sys.exit("--aux-weight: needs --lm-layers and data with the `target` tensor")
    model = load_trainable(ck, cfg, states.mean(0), states.std(0) + 1e-6, with_head=not args.reinit, seed=args.seed,
                           aux=args.aux_weight > 0)
    if args.init_model:
        P.load_exported(model, args.init_model, head_only=False)
    if args.init_head:
        P.load_exported(model, args.init_head, head_only=True)
    nl = cfg["llm"]["num_hidden_layers"]
    start = nl - args.lm_layers
    if not 0 <= args.lm_layers <= nl:
        sys.exit(f"--lm-layers {args.lm_layers}: the LM has {nl} layers")
    if args.augment_copies and args.lm_layers:
        sys.exit("--augment-copies: only for the head alone (without --lm-layers)")
    cache_paths = args.features.split(",") if args.features else [None] * len(dir_frames)
    if len(cache_paths) != len(dir_frames):
        sys.exit(f"--features: {len(cache_paths)} caches for {len(dir_frames)} --data directories")
    if args.augment_copies and len(dir_frames) > 1:
        sys.exit("--augment-copies: only with one --data directory")
    bounds = np.cumsum([0] + dir_frames)
    parts = [cached_features(path, slice(bounds[k], bounds[k + 1]), start, args, cfg, images, states, instr_idx,
                             instructions, lf) for k, path in enumerate(cache_paths)]
    cache = parts[0][2]
    if args.lm_layers:  # right-padded to the widest prompt of every part
        width = max(f.shape[1] for f, _, _ in parts)
        feats = np.concatenate([np.pad(f, ((0, 0), (0, width - f.shape[1]), (0, 0))) for f, _, _ in parts])
        last = np.concatenate([l for _, l, _ in parts])
    else:
        feats, last = np.concatenate([f for f, _, _ in parts]), None
    if args.lm_layers:
        check_top_layers(model, args.model, images, states, instr_idx, instructions, feats, last, start, lf,
                         [lo for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo])
    if args.augment_copies:  # stacked [copies + 1, N, d], the clean features first
        aug = np.zeros((0, n, feats.shape[1]), np.float32)
        if cache is not None and "cog_aug" in cache.files:
            seed = int(cache["aug_seed"]) if "aug_seed" in cache.files else "unknown"
            if seed != args.seed:
                sys.exit(f"--features {args.features}: jittered copies of --seed {seed}, not {args.seed}")
            aug = cache["cog_aug"]
        for k in range(len(aug), args.augment_copies):
            log(lf, f"features of jittered copy {k + 1}/{args.augment_copies}")
            extra, _ = runtime_pass(args.model, jittered(images, args.seed + 1000 * (k + 1)), states, instr_idx,
                                    instructions, lf, args.threads)
            aug = np.concatenate([aug, extra[None]])
            log(lf, f"jittered vs clean features: NMSE {((extra - feats) ** 2).sum() / (feats ** 2).sum():.3f}")
            if args.features:
                save_cache(args.features, cog=feats, cog_aug=aug, aug_seed=args.seed, start=start)
        feats = np.concatenate([feats[None], aug[:args.augment_copies]])
    del images

    an = cfg["action_normalization"]
    norm = normalize_actions(actions, np.array(an["q01"]), np.array(an["q99"]))

    # Held-out frames: the tail of each --data directory (frames are in episode order, so
    # whole episodes except one at each boundary), so every source is trained on and scored.
    hold_rows = np.concatenate([np.arange(hi - int((hi - lo) * args.holdout), hi)
                                for lo, hi in zip(bounds[:-1], bounds[1:])])
    train_rows = np.setdiff1d(np.arange(n), hold_rows)
    feats_t, st_t, act_t = torch.from_numpy(feats), torch.from_numpy(states), torch.from_numpy(norm)
    last_t = torch.from_numpy(last) if last is not None else None

    # The trained modules (the policy's own, so training updates it) and their EMA copy.
    llm = model.policy.llm.model
    trained = torch.nn.ModuleDict({"dit": model.policy.dit})
    if args.lm_layers:
        trained.update({"layers": llm.layers[start:], "norm": llm.norm})
    if args.aux_weight:
        trained["aux"] = model.aux_head
        targets_t = torch.from_numpy(targets)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)
    ema = copy.deepcopy(trained)
    # As train.py, the LM's norm gains are not decayed (the head keeps its earlier all-decay setting).
    no_decay = [p for k, p in trained.named_parameters() if not k.startswith("dit.") and p.dim() < 2]
    decay = [p for p in trained.parameters() if all(p is not q for q in no_decay)]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr, betas=(0.9, 0.95))

    def cognition(rows, mods, clean=False):
        if args.augment_copies:  # each row from a random copy (the clean frame is copy 0)
            copy = torch.zeros_like(rows) if clean else torch.randint(0, len(feats_t), rows.shape)
            return feats_t[copy, rows]
        if not args.lm_layers:
            return feats_t[rows]
        return model.cognition_from_layer(feats_t[rows].float(), last_t[rows], mods["layers"], mods["norm"])

    def eval_loss():
        """The EMA head's eps-MSE on the held-out frames, with fixed noise."""
        torch_state = torch.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            rows = torch.from_numpy(hold_rows[np.linspace(0, len(hold_rows) - 1, min(4096, len(hold_rows))).astype(int)])
            loss = model.diffusion_loss(cognition(rows, ema, clean=True), st_t[rows], act_t[rows], 4, 0.0, 0.0,
                                        dit=ema["dit"]).item()
        torch.set_rng_state(torch_state)
        return loss

    log(lf, f"head fine-tune: {len(train_rows)} train / {len(hold_rows)} held-out frames; "
            f"held-out eps-MSE at start {eval_loss():.4f}")
    t0 = time.time()
    step, losses, aux_losses = 0, [], [0.0]
    progress = 0.0
    while progress < 1.0:
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * progress)) * min(1.0, (step + 1) / 200)
        for g in opt.param_groups:
            g["lr"] = lr
        rows = torch.from_numpy(rng.choice(train_rows, args.batch))
        cog = cognition(rows, trained)
        loss = model.diffusion_loss(cog, st_t[rows], act_t[rows], args.repeats, args.cond_drop, args.state_drop)
        if args.aux_weight:
            aux = model.aux_loss(cog, st_t[rows], targets_t[rows])
            aux_losses.append(aux.item())
            loss = loss + args.aux_weight * aux
        optimizer_step(opt, loss, trained, ema, args.ema, step)
        step += 1
        losses.append(loss.item())
        progress = max(step / args.steps, (time.time() - t0) / args.time_budget)
        if step % (200 if args.lm_layers else 1000) == 0:
            log(lf, f"step {step} loss {np.mean(losses[-1000:]):.4f} aux {np.mean(aux_losses[-1000:]):.4f} "
                    f"held-out {eval_loss():.4f} lr {lr:.2e} "
                    f"{(time.time() - t0) / 60:.1f} min progress {100 * progress:.1f}%")
    model.policy.dit = ema["dit"]
    if args.lm_layers:
        for i, layer in enumerate(ema["layers"]):
            llm.layers[start + i] = layer
        llm.norm = ema["norm"]
    with open(os.path.join(args.model, "tokenizer.model"), "rb") as f:
        tok = f.read()
    P.export(model, cfg, tok, args.out)
    log(lf, f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; held-out {eval_loss():.4f}; "
            + (f"aux {np.mean(aux_losses[-200:]):.4f}; " if args.aux_weight else "") + f"exported to {args.out}")


if __name__ == "__main__":
    main()
