#!/usr/bin/python3
"""Trains evla-tabletop (the runtime's CogACT architecture) on `evla sim gen` demonstrations.

CogACT's recipe: eps-prediction, 100 training steps, squaredcos_cap_v2 betas, several
diffusion samples per backbone forward ("repeated diffusion steps"), 10% condition dropout
to the learned uncondition (for CFG), AdamW, warmup + cosine LR; plus an EMA of the
weights (exported). Seeded (torch + numpy). The schedule runs on max(step/steps,
elapsed/time_budget), so the run ends on time however busy the CPUs are.

  The shipped model's exact commands are in models/evla-tabletop/README.md ("Training").

`--init-only` exports the random-initialised model (for `evla bench` before training).
"""
import argparse
import copy
import glob
import json
import math
import os
import sys
import time

import numpy as np
import torch

import policy as P  # noqa: E402


def log(f, msg):
    line = time.strftime("%H:%M:%S ") + msg
    print(line, flush=True)
    if f:
        f.write(line + "\n")
        f.flush()


def load_demos(data_dirs, max_episodes, with_images=True):
    """All shards of one or more directories (comma list) into memory: uint8 images, states,
    chunks, per-frame instruction index, ... and the frames taken from each directory. Failed
    episodes are skipped unless every frame was labelled by an expert taking over (on-policy
    data, `evla sim gen --policy`), whose labels are good whatever the policy did. `variants`
    episodes are refused: that split is held out for evaluation. Where the task's targets and
    every object appear in each frame (pixels) comes from the shards, or, for shards written
    before they carried it, from matching's fixed camera (NaN where the camera moved).
    with_images=False returns None for the images (a head trained on cached features needs
    none, and all of them may not fit in memory)."""
    images, states, actions, targets, objects, instr_idx = [], [], [], [], [], []
    target_px, objects_px = [], []
    instructions, lookup, tasks, splits, dir_frames = [], {}, [], set(), []
    n_ep, first_shapes = 0, None
    for data_dir in data_dirs.split(","):
        paths = sorted(glob.glob(os.path.join(data_dir, "shard-*.safetensors")))
        if not paths:
            sys.exit(f"--data {data_dir}: no shard-*.safetensors there")
        dir_frames.append(0)
        for path in paths:
            if n_ep >= max_episodes:
                break
            t, meta = P.safetensors_io.read(path)
            shapes = (t["image"].shape[1:], t["action"].shape[1:])
            first_shapes = first_shapes or shapes
            if shapes != first_shapes:
                sys.exit(f"--data {path}: frames {shapes[0]} and chunks {shapes[1]} differ "
                         f"from the first shard's {first_shapes[0]} and {first_shapes[1]}")
            keep_rows, fixed_camera = [], []
            for e in json.loads(meta["episodes"]):
                if n_ep >= max_episodes:
                    break
                if not e.get("success", True) and e.get("labels") != "expert_takeover":
                    continue
                n_ep += 1
                s = e["instruction"].lower()
                if s not in lookup:
                    lookup[s] = len(instructions)
                    instructions.append(s)
                keep_rows.append(np.arange(e["first_frame"], e["first_frame"] + e["frames"]))
                instr_idx.append(np.full(e["frames"], lookup[s], np.int64))
                if e.get("split") == "variants":
                    sys.exit(f"--data {path}: `variants` episodes; that split is held out for evaluation, "
                             f"train on `matching` or `randomized` ones")
                tasks.append(e["task"])
                splits.add(e.get("split", "matching"))
                fixed_camera.append(np.full(e["frames"], e.get("split", "matching") in ("matching", "randomized")
                                            and not e.get("camera_jitter", 0)))
            if keep_rows:
                rows = np.concatenate(keep_rows)
                dir_frames[-1] += len(rows)
                if with_images:
                    images.append(t["image"][rows])
                states.append(t["state"][rows])
                actions.append(t["action"][rows])
                if "target" in t:
                    targets.append(t["target"][rows])
                if "objects" in t:
                    objects.append(t["objects"][rows])
                if "target_image" in t:
                    target_px.append(t["target_image"][rows].astype(np.float32))
                    objects_px.append(t["objects_image"][rows].astype(np.float32))
                elif "target" in t:  # older shards: only the fixed camera's projection is known
                    fixed, size = np.concatenate(fixed_camera), t["image"].shape[1]
                    target_px.append(image_points_fallback(t["target"][rows].reshape(-1, 2, 3), fixed,
                                                           size).reshape(-1, 4))
                    objects_px.append(image_points_fallback(t["objects"][rows][:, :, :3], fixed, size)
                                      if "objects" in t else None)
    parts = len(states)  # shard slices read
    tg = np.concatenate(targets).astype(np.float32) if len(targets) == parts else None
    ob = np.concatenate(objects).astype(np.float32) if len(objects) == parts else None
    tg_px = np.concatenate(target_px) if len(target_px) == parts else None
    ob_px = (np.concatenate(objects_px) if len(objects_px) == parts and all(o is not None for o in objects_px)
             else None)
    return (np.concatenate(images) if with_images else None, np.concatenate(states).astype(np.float32),
            np.concatenate(actions).astype(np.float32), tg, np.concatenate(instr_idx), instructions, n_ep,
            splits, ob, tg_px, ob_px, dir_frames)


def fixed_camera_pixels(xyz, image_size):
    """Pixel x, y [..., 2] of table-unit points [..., 3] in an image_size frame of the fixed
    camera of `matching` (sim::Camera's defaults in src/sim/raster.h, projected as
    sim::Projection does; the shards of `evla sim gen` now carry these positions themselves)."""
    eye, look_at, fov_y = np.array([0, -0.75, 0.95]), np.zeros(3), 38.0
    fwd = (look_at - eye) / np.linalg.norm(look_at - eye)
    right = np.cross(fwd, [0, 0, 1])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    focal = 0.5 * image_size / math.tan(math.radians(fov_y) / 2)
    d = xyz - eye
    z = d @ fwd
    return np.stack([0.5 * image_size + (d @ right) * focal / z, 0.5 * image_size - (d @ up) * focal / z], -1)


def image_points_fallback(xyz, fixed, image_size):
    """[F, K, 3] table points to [F, K, 2] pixels for shards written before they carried
    `target_image` / `objects_image`; NaN in the frames whose camera moved (`fixed` false)."""
    px = fixed_camera_pixels(xyz, image_size)
    px[~fixed] = np.nan
    return px.astype(np.float32)


def pixel_patches(px, frame_size, image_size, patch):
    """Row-major index of the patch that shows each pixel position [..., 2] of a frame_size
    frame, in the encoder's image_size input."""
    g = image_size // patch
    xy = np.floor(px * (image_size / frame_size) / patch)
    col = np.clip(xy[..., 0], 0, g - 1).astype(np.int64)
    row = np.clip(xy[..., 1], 0, g - 1).astype(np.int64)
    return row * g + col


def matching_patches(xyz, image_size, patch):
    """Index (row-major) of the image patch that shows each table-unit point [N,3] through the
    fixed camera of `matching`. Diagnostics of matching frames use it."""
    return pixel_patches(fixed_camera_pixels(xyz, image_size), image_size, image_size, patch)


def colour_jitter(x, gen):
    """x [B,3,H,W] in [0,1]: brightness, contrast, per-channel gain, small offset; 80% of images."""
    b = x.shape[0]
    u = lambda lo, hi, *shape: lo + (hi - lo) * torch.rand(b, *shape, generator=gen)
    on = (torch.rand(b, 1, 1, 1, generator=gen) < 0.8).float()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) * u(0.75, 1.25, 1, 1, 1) + mean  # contrast
    y = y * u(0.75, 1.25, 1, 1, 1) * u(0.9, 1.1, 3, 1, 1) + u(-0.06, 0.06, 3, 1, 1)
    return (on * y + (1 - on) * x).clamp(0, 1)


def normalize_actions(actions, q01, q99):
    """[..., 4] actions to the head's targets: xyz mapped from [q01, q99] to [-1, 1] and
    clipped; the gripper (last dimension) stays 0/1."""
    norm = actions.copy()
    norm[..., :3] = np.clip(2 * (actions[..., :3] - q01[:3]) / (q99[:3] - q01[:3]) - 1, -1, 1)
    return norm


def prompt_table(cfg, sp, instructions):
    """Prompt ids per instruction (exactly the runtime's build_prompt_ids) minus the BOS,
    right-padded: ([n_instructions, T] ids, [n_instructions] lengths)."""
    ids = [P.ref.build_prompt_ids(cfg, sp, s)[1:] for s in instructions]
    assert all(sp.id_to_piece(i) != "<unk>" for s in ids for i in s[:-1])
    text_ids = torch.zeros(len(ids), max(len(i) for i in ids), dtype=torch.long)
    for k, i in enumerate(ids):
        text_ids[k, :len(i)] = torch.tensor(i)
    return text_ids, torch.tensor([len(i) for i in ids])


def optimizer_step(opt, loss, model, ema, ema_decay, step):
    """Backward, gradient clipping at 1.0, AdamW step, then the EMA of the weights (decay
    warming up as (1 + step) / (10 + step)); returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    d = min(ema_decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.mul_(d).add_(pm, alpha=1 - d)
    return gn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="demonstration directory, or a comma list of them")
    ap.add_argument("--out", required=True, help="exported model directory")
    ap.add_argument("--episodes", type=int, default=10 ** 9, help="use at most this many episodes")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--time-budget", type=float, default=1e9, help="seconds; the schedule also ends on it")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=8, help="diffusion samples per backbone forward")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--no-aug", action="store_true")
    ap.add_argument("--export-every", type=float, default=600, help="seconds between exports")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="1: torch's OpenMP spins badly on busy shared cores")
    ap.add_argument("--log", default=None)
    ap.add_argument("--size", default=None, help="JSON dict overriding make_config sizes")
    ap.add_argument("--state-dim", type=int, default=0, choices=[0, 4],
                    help="4 feeds the env state through s_embedder (the shipped model, with --state-drop 0.3: "
                         "without dropout the policy learned to ignore the image, models/evla-tabletop/README.md); "
                         "0 (default, as CogACT) does not")
    ap.add_argument("--state-drop", type=float, default=0.0,
                    help="probability of hiding the state from the action head (it sees the mean state)")
    ap.add_argument("--aux-weight", type=float, default=0.0,
                    help="weight of the auxiliary loss: a training-only linear head on the cognition "
                         "feature regresses the task's object and destination positions (the shards' "
                         "privileged `target`), which teaches the backbone to localise them")
    ap.add_argument("--ground-weight", type=float, default=0.0,
                    help="weight of the grounding loss: training-only queries from the cognition feature "
                         "must point at the visual token showing the task's object and the one showing "
                         "its destination (patches from the privileged `target` through the matching "
                         "camera)")
    ap.add_argument("--attn-weight", type=float, default=0.0,
                    help="weight of the attention loss: at --attn-layers, the cognition token's query "
                         "head 0 must attend to the object's visual token and head 1 to the destination's "
                         "(patches as for --ground-weight); it trains the LM's own retrieval")
    ap.add_argument("--attn-layers", default="2,4,6", help="LM layers (0-based) the attention loss supervises")
    ap.add_argument("--patch-pos-weight", type=float, default=0.0,
                    help="weight of the patch position loss: a training-only head reads an object's exact "
                         "xyz from the visual token showing it, at the input of the first --attn-layers "
                         "layer; every object where the shards have `objects`, else the task's object and "
                         "destination")
    ap.add_argument("--mid-aux-layers", default="",
                    help="also regress the --aux-weight targets from the cognition token's residual at the "
                         "input of these LM layers (0-based, comma list), each with its own training-only head")
    ap.add_argument("--stop-at-step", type=int, default=0,
                    help="export and stop at this step without shortening the schedule (to resume later)")
    ap.add_argument("--vit-pos", default="random", choices=["random", "sincos"],
                    help="initial ViT position embeddings: N(0, 0.02) or 2-D sin-cos")
    ap.add_argument("--init-only", action="store_true")
    ap.add_argument("--ckpt", default=None, help="torch checkpoint path (saved with each export)")
    ap.add_argument("--init-model", default=None,
                    help="start every policy weight from this exported model (its config, tokenizer and action "
                         "statistics too); training-only heads and the optimiser start fresh, with a warm-up")
    ap.add_argument("--far-weight", type=float, default=1.0,
                    help="sample frames whose gripper is >= 0.10 from the task's object this many times as often: "
                         "there the gripper's image does not give the object's place away (grounding_probe.py)")
    ap.add_argument("--resume", default=None,
                    help="continue from this --ckpt file (weights, EMA, optimiser, step; the tokenizer is "
                         "taken from --out): a new schedule of --steps / --time-budget, without warm-up")
    args = ap.parse_args()

    P.set_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    rng = np.random.default_rng(args.seed)
    lf = open(args.log, "a") if args.log else None
    log(lf, "args: " + json.dumps(vars(args)))

    t0 = time.time()
    images, states, actions, targets, instr_idx, instructions, n_ep, splits, objects, tg_px, ob_px, _ = load_demos(
        args.data, args.episodes)
    if args.aux_weight > 0 and targets is None:
        sys.exit("--aux-weight needs shards with the `target` tensor (evla sim gen writes it)")
    n = len(images)
    log(lf, f"data: {n_ep} episodes, {n} frames, {len(instructions)} instructions, "
            f"{images.nbytes / 2**20:.0f} MiB images, loaded in {time.time() - t0:.0f} s")

    # Action statistics (CogACT: per-dim q01/q99 over the dataset's actions); gripper not normalised.
    if args.init_model and args.resume:
        sys.exit("--init-model and --resume: give one")
    init_cfg = None
    if args.init_model:  # its head was trained on its own action statistics
        with open(os.path.join(args.init_model, "config.json")) as f:
            init_cfg = json.load(f)
        q01 = np.array(init_cfg["action_normalization"]["q01"])
        q99 = np.array(init_cfg["action_normalization"]["q99"])
    else:
        step_actions = actions[:, 0, :]
        q01 = np.quantile(step_actions, 0.01, axis=0)
        q99 = np.quantile(step_actions, 0.99, axis=0)
        q01[3], q99[3] = 0.0, 1.0
    norm = normalize_actions(actions, q01, q99)
    state_mean, state_std = states.mean(0), states.std(0) + 1e-6
    log(lf, f"q01 {q01.round(4).tolist()} q99 {q99.round(4).tolist()} state mean "
            f"{state_mean.round(3).tolist()} std {state_std.round(3).tolist()}")

    import sentencepiece as spm
    tok_path = os.path.join(args.init_model or args.out, "tokenizer.model")
    if args.resume or args.init_model:  # the embeddings belong to the first run's tokenizer
        with open(tok_path, "rb") as f:
            tok = f.read()
    else:
        tok = P.train_tokenizer(instructions)
    sp = spm.SentencePieceProcessor(model_proto=tok)
    space_id = sp.piece_to_id("\u2581")
    cfg = init_cfg or P.make_config(sp.get_piece_size(), space_id, q01, q99,
                                    json.loads(args.size) if args.size else "default", state_dim=args.state_dim)
    text_ids, text_len = prompt_table(cfg, sp, instructions)
    tmax = text_ids.shape[1]
    log(lf, f"tokenizer: vocab {sp.get_piece_size()}, space id {space_id}, prompt {tmax}..{min(text_len)} "
            f"tokens after BOS (+64 visual)")

    mid_aux = [int(v) for v in args.mid_aux_layers.split(",") if v]
    if mid_aux and (args.aux_weight <= 0 or any(not 0 <= li <= cfg["llm"]["num_hidden_layers"] for li in mid_aux)):
        sys.exit(f"--mid-aux-layers {args.mid_aux_layers}: needs --aux-weight and layers 0..{cfg['llm']['num_hidden_layers']}")
    model = P.Trainable(cfg, state_mean, state_std, aux_dim=9 if args.aux_weight > 0 else 0,
                        ground=args.ground_weight > 0, patch_pos=args.patch_pos_weight > 0,
                        mid_aux_layers=mid_aux)
    P.init_weights(model.policy, args.seed, args.vit_pos)
    if args.init_model:
        P.load_exported(model, args.init_model, head_only=False)
        log(lf, f"policy weights from {args.init_model}")
    nparam = sum(p.numel() for p in model.policy.parameters())
    log(lf, f"model: {nparam / 1e6:.2f} M parameters")
    if args.init_only:
        P.export(model, cfg, tok, args.out)
        log(lf, f"exported random init to {args.out}")
        return

    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "embed_tokens" not in name and "pos" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))

    images_t = torch.from_numpy(images)  # [N,H,W,3] uint8
    states_t = torch.from_numpy(states)
    norm_t = torch.from_numpy(norm)
    instr_t = torch.from_numpy(instr_idx)
    targets_t = torch.from_numpy(targets) if targets is not None else None
    layer_list = [int(v) for v in args.attn_layers.split(",")]
    attn_layers = layer_list if args.attn_weight > 0 else []
    if any(not 0 <= li < cfg["llm"]["num_hidden_layers"] for li in layer_list):
        sys.exit(f"--attn-layers {args.attn_layers}: the LM has {cfg['llm']['num_hidden_layers']} layers")
    if cfg["llm"]["num_attention_heads"] < 2 and attn_layers:
        sys.exit("--attn-weight needs at least 2 LM attention heads (object, destination)")
    if args.ground_weight > 0 or attn_layers or args.patch_pos_weight > 0:
        flag = "--ground-weight" if args.ground_weight > 0 else "--attn-weight" if attn_layers else "--patch-pos-weight"
        if targets is None or tg_px is None:
            sys.exit(f"{flag} needs shards with the `target` tensor (evla sim gen writes it)")
        if np.isnan(tg_px).any():  # a moved camera in shards older than `target_image`
            sys.exit(f"{flag} needs where the targets appear in each frame: shards with `target_image` "
                     f"(evla sim gen writes it), or older ones of matching's fixed camera")
        enc = cfg["vision"]["encoders"][0]
        frame = images.shape[1]
        obj_patch = torch.from_numpy(pixel_patches(tg_px[:, :2], frame, enc["image_size"], enc["patch_size"]))
        dest_patch = torch.from_numpy(pixel_patches(tg_px[:, 2:], frame, enc["image_size"], enc["patch_size"]))
    if args.patch_pos_weight > 0:
        # Every object of the scene where the shards list them (`objects`), else the task's
        # object and destination.
        if objects is not None and ob_px is not None:
            pp_xyz = torch.from_numpy(objects[:, :, :3].copy())
            pp_present = torch.from_numpy(objects[:, :, 3].copy())
            pp_patch = torch.from_numpy(pixel_patches(np.nan_to_num(ob_px), frame, enc["image_size"],
                                                      enc["patch_size"]))
        else:
            pp_xyz = torch.from_numpy(targets.reshape(-1, 2, 3).copy())
            pp_present = torch.ones(len(targets), 2)
            pp_patch = torch.stack([obj_patch, dest_patch], dim=1)
        log(lf, "patch position loss over " + ("every object (`objects`)" if objects is not None
                                               else "the task's object and destination"))

    step0, fresh_opt = 0, bool(args.init_model)
    if args.resume:
        ck = torch.load(args.resume)
        # Training-only heads added since the checkpoint (e.g. --ground-weight) start fresh, and
        # ones no longer asked for are dropped; the optimiser then restarts, with a warm-up.
        missing, unexpected = model.load_state_dict(ck["model"], strict=False)
        ema.load_state_dict(ck["ema"], strict=False)
        heads = ("aux_head", "ground_", "patch_pos", "mid_aux")
        if any(not k.startswith(heads) for k in missing + unexpected):
            sys.exit(f"--resume: checkpoint does not fit the model (missing {missing}, unexpected {unexpected})")
        fresh_opt = bool(missing or unexpected)
        if not fresh_opt:
            opt.load_state_dict(ck["opt"])
        step0 = ck["step"]
        log(lf, f"resumed from {args.resume} at step {step0}" + (f"; new heads {missing}, dropped "
                                                                 f"{unexpected}, optimiser restarted"
                                                                 if fresh_opt else ""))

    def lr_at(progress, step):
        if step - step0 < args.warmup and (not args.resume or fresh_opt):
            return args.lr * (step - step0 + 1) / args.warmup
        p = min(1.0, progress)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    def do_export(tag):
        te = time.time()
        P.export(ema, cfg, tok, args.out)
        if args.ckpt:
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step, "cfg": cfg}, args.ckpt)
        log(lf, f"export ({tag}) step {step} to {args.out} in {time.time() - te:.1f} s")

    sample_p = None
    if args.far_weight != 1.0:
        if targets is None:
            sys.exit("--far-weight needs shards with the `target` tensor")
        far = np.linalg.norm(targets[:, :3] - states[:, :3], axis=1) >= 0.10
        sample_p = np.where(far, args.far_weight, 1.0)
        sample_p /= sample_p.sum()
        log(lf, f"--far-weight {args.far_weight}: {far.mean():.1%} of frames far, {sample_p[far].sum():.1%} of samples")

    t_start = time.time()
    last_export = t_start
    step, losses, hist, aux_losses, ground_losses, attn_losses, pp_losses = step0, [], [], [0.0], [0.0], [0.0], [0.0]
    progress = 0.0
    while progress < 1.0:
        ts = time.time()
        lr = lr_at(progress, step)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        idx = torch.from_numpy(rng.integers(0, n, args.batch) if sample_p is None
                               else rng.choice(n, args.batch, p=sample_p))
        x = images_t[idx].permute(0, 3, 1, 2).float() / 255.0
        if not args.no_aug:
            x = colour_jitter(x, gen)
        ii = instr_t[idx]
        model.train()
        cog, visual, (hidden, last) = model.cognition(x, text_ids[ii], text_len[ii], with_visual=True,
                                                      with_hidden=True)
        loss = model.diffusion_loss(cog, states_t[idx], norm_t[idx], args.repeats, args.cond_drop,
                                    args.state_drop)
        if args.aux_weight > 0:
            aux = model.aux_loss(cog, states_t[idx], targets_t[idx])
            if model.mid_aux:
                aux = 0.5 * (aux + model.mid_aux_loss(hidden, last, states_t[idx], targets_t[idx]))
            aux_losses.append(aux.item())
            loss = loss + args.aux_weight * aux
        if args.ground_weight > 0:
            gl = model.ground_loss(cog, visual, obj_patch[idx], dest_patch[idx])
            ground_losses.append(gl.item())
            loss = loss + args.ground_weight * gl
        if attn_layers:
            al = model.attention_loss(hidden, last, obj_patch[idx], dest_patch[idx], attn_layers)
            attn_losses.append(al.item())
            loss = loss + args.attn_weight * al
        if args.patch_pos_weight > 0:
            pl = model.patch_position_loss(hidden, layer_list[0], pp_patch[idx], pp_xyz[idx], pp_present[idx])
            pp_losses.append(pl.item())
            loss = loss + args.patch_pos_weight * pl
        gn = optimizer_step(opt, loss, model, ema, args.ema, step)
        step += 1
        losses.append(loss.item())
        now = time.time()
        progress = max((step - step0) / args.steps, (now - t_start) / args.time_budget)
        if step % 25 == 0 or step == step0 + 1:
            el = now - t_start
            eta = el / max(progress, 1e-9) - el
            avg = float(np.mean(losses[-25:]))
            hist.append((step, avg))
            log(lf, f"step {step} loss {avg:.4f} aux {float(np.mean(aux_losses[-25:])):.4f} "
                    f"ground {float(np.mean(ground_losses[-25:])):.3f} attn {float(np.mean(attn_losses[-25:])):.3f} "
                    f"patch {float(np.mean(pp_losses[-25:])):.4f} lr {lr:.2e} gnorm {float(gn):.2f} "
                    f"{now - ts:.2f} s/step elapsed {el / 60:.1f} min progress {100 * progress:.1f}% "
                    f"ETA {eta / 60:.1f} min")
        if args.stop_at_step and step >= args.stop_at_step:
            break
        if now - last_export > args.export_every:
            do_export("periodic")
            last_export = time.time()
    do_export("final")
    log(lf, f"done: {step} steps in {(time.time() - t_start) / 60:.1f} min; final loss (last 100) "
            f"{np.mean(losses[-100:]):.4f}; curve " + " ".join(f"{s}:{l:.3f}" for s, l in hist[::8]))


if __name__ == "__main__":
    main()
