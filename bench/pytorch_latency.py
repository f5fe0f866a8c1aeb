"""PyTorch-eager latency of the reference policy, the baseline evla is compared with.

    PYTHONPATH=python /usr/bin/python3 bench/pytorch_latency.py models/evla-tiny-random --threads 2 --reps 10
    PYTHONPATH=python /usr/bin/python3 bench/pytorch_latency.py /tmp/cogact-base-evla --dtype bf16 --warmup 1 --reps 10

--dtype bf16 builds the model in bfloat16 and loads a BF16 checkpoint one
shard at a time without an fp32 copy (full-size models); PyTorch's BF16
matrix products run through oneDNN. --dtype int8 then gives the LM
PyTorch's dynamic int8 quantization (torch.ao.quantization.quantize_dynamic
of its linear layers, one layer at a time through fp32 so that no fp32 copy
of the whole LM exists; int8 weights, activations quantized per call); the
LM runs in fp32 around them, the other modules stay BF16.

Runs the full forward (vision, projector, LM, action head with the config's
sampling steps and CFG) under torch.inference_mode and prints the median
milliseconds per module and end to end as one JSON object on stdout:
{"vision", "projector", "llm", "action_head", "total"}. Run details go to stderr.
"""
import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time

import numpy as np
import sentencepiece as spm
import torch


from evla_ref import images  # noqa: E402
from evla_ref.model import (build_prompt_ids, cognition_feature, encode_images, load_model,  # noqa: E402
                            load_model_16bit, postprocess, project, sample_actions)


def inputs(model, model_dir, instruction, seed):
    cfg = model.config
    size = cfg["vision"]["encoders"][0]["image_size"]
    rng = np.random.RandomState(seed)
    png = os.path.join(model_dir, "example.png")
    img = images.read_png(png) if os.path.exists(png) else None
    if img is None or img.shape != (size, size, 3):
        img = images.tabletop(size, rng)  # no resize in the reference: draw at image_size
    imgs = [img] * cfg["vision"].get("num_images", 1)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, cfg["prompt"]["tokenizer"]))
    ids = build_prompt_ids(cfg, sp, instruction)
    ah = cfg["action_head"]
    state = rng.normal(0, 0.5, ah["state_dim"]).astype(np.float32) if ah.get("state_dim", 0) else None
    noise = rng.standard_normal((ah["chunk_size"], ah["action_dim"])).astype(np.float32)
    return imgs, ids, state, noise


def one_run(model, imgs, ids, state, noise):
    """One policy step; returns per-stage wall milliseconds."""
    t = [time.perf_counter()]
    feats = encode_images(model, imgs)
    t.append(time.perf_counter())
    vis = project(model, feats)
    t.append(time.perf_counter())
    cog = cognition_feature(model, ids, vis)
    t.append(time.perf_counter())
    x = sample_actions(model, cog, state, noise)
    datasets = sorted(model.config["action_normalization"].get("datasets", {}))
    postprocess(model.config, x.double().numpy(), datasets[0] if datasets else None)
    t.append(time.perf_counter())
    ms = [(b - a) * 1e3 for a, b in zip(t, t[1:])]
    return {"vision": ms[0], "projector": ms[1], "llm": ms[2], "action_head": ms[3],
            "total": (t[-1] - t[0]) * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--instruction", default="put the eggplant in the basket")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("f32", "bf16", "int8"), default="f32")
    args = ap.parse_args()
    if args.reps < 10:
        ap.error("--reps must be at least 10")

    torch.set_num_threads(args.threads)
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        print(f"warning: set OPENBLAS_NUM_THREADS={args.threads} too (torch's BLAS sizes its own pool; "
              "bench/compare_pytorch.py does this)", file=sys.stderr)
    model = load_model_16bit(args.model_dir) if args.dtype in ("bf16", "int8") else load_model(args.model_dir)
    if args.dtype == "int8":
        llm = model.llm
        libc = ctypes.CDLL("libc.so.6")
        with torch.no_grad():
            for layer in llm.model.layers:
                layer.float()
                torch.ao.quantization.quantize_dynamic(layer, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
                gc.collect()
                libc.malloc_trim(0)  # hand the layer's fp32 and bf16 pages back before the next one
            llm.float()
    data = inputs(model, args.model_dir, args.instruction, args.seed)
    with torch.inference_mode():
        for _ in range(args.warmup):
            one_run(model, *data)
        runs = [one_run(model, *data) for _ in range(args.reps)]
    result = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    cfg = model.config
    e0, ah = cfg["vision"]["encoders"][0], cfg["action_head"]
    visual = cfg["vision"].get("num_images", 1) * (e0["image_size"] // e0["patch_size"]) ** 2
    print(f"model {cfg.get('name')} threads {args.threads} warmup {args.warmup} reps {args.reps} "
          f"llm tokens {visual + len(data[1])} sample_steps {ah['sample_steps']} "
          f"cfg {ah.get('cfg_scale', 1.0)} dtype {args.dtype} torch {torch.__version__}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
