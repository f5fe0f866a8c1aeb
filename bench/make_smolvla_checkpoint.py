"""Writes a random-weight SmolVLA checkpoint at smolvla_base's size, in
LeRobot's layout (the same files and tensor names as
python/evla_ref/make_smolvla_fixture.py writes at a small size):

    OUT/config.json, OUT/model.safetensors, OUT/policy_{pre,post}processor.json
    and their statistics, OUT/tokenizer.json (the byte-level BPE test
    tokenizer: SmolVLM2's own is not in the repository; its vocabulary size
    does not change the time)

    PYTHONPATH=python /usr/bin/python3 bench/make_smolvla_checkpoint.py --out /tmp/smolvla-base [--dtype bf16]

Sizes: SmolVLM2-500M-Video-Instruct's (SigLIP 512 px, 12 layers of 768; the
first 16 of its 32 text layers, 960 wide), the expert at 0.75 × 960 = 720 wide
with a 2048-wide MLP, three 256 × 256 cameras, a 6-value state and 6-value
actions, a chunk of 50 in 10 flow steps: about 450 M parameters (1.8 GB in
float32, 0.9 GB in bfloat16).
"""
import argparse
import json
import os
import shutil

import numpy as np

from evla_ref import make_smolvla_fixture, safetensors_io, smolvla


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--cameras", type=int, default=3)
    args = ap.parse_args()
    cfg = dict(make_smolvla_fixture.CONFIG)
    del cfg["evla_vlm"]  # the real VLM's sizes, by vlm_model_name
    cfg.update({"chunk_size": 50, "n_action_steps": 50, "max_state_dim": 32, "max_action_dim": 32,
                "resize_imgs_with_padding": [512, 512], "tokenizer_max_length": 48, "num_steps": 10,
                "num_vlm_layers": 16})
    cfg["input_features"] = {f"observation.images.camera{k + 1}": {"type": "VISUAL", "shape": [3, 256, 256]}
                             for k in range(args.cameras)}
    cfg["input_features"]["observation.state"] = {"type": "STATE", "shape": [6]}
    cfg["output_features"] = {"action": {"type": "ACTION", "shape": [6]}}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    rng = np.random.default_rng(0)
    w = make_smolvla_fixture.weights(smolvla.Config(cfg), rng)
    dtypes = None
    if args.dtype == "bf16":  # the matrices; norms, biases and statistics stay float32
        dtypes = {k: "BF16" for k, v in w.items() if v.ndim >= 2}
        w = {k: safetensors_io.to_bf16(v) if k in dtypes else v for k, v in w.items()}
    safetensors_io.write(os.path.join(args.out, "model.safetensors"), w, dtypes=dtypes)
    make_smolvla_fixture.write_processors(args.out, np.zeros(6, np.float32), np.ones(6, np.float32),
                                          np.zeros(6, np.float32), np.ones(6, np.float32))
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "bpe", "smol.json")
    shutil.copyfile(src, os.path.join(args.out, "tokenizer.json"))
    n = sum(int(np.prod(v.shape)) for v in w.values())
    print(f"{args.out}: {n / 1e6:.1f} M parameters ({args.dtype})")


if __name__ == "__main__":
    main()
