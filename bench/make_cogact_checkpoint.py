"""Writes a random-weight CogACT checkpoint with the released models' exact
shapes, in the files a CogACT model repository holds:

    OUT/checkpoints/CogACT-<Size>.pt   torch.save({"model": {group: state_dict}})
    OUT/config.json                    {"vla": {"base_vlm": ...}, "action_model_type": ...}
    OUT/dataset_statistics.json        two datasets' action statistics

    /usr/bin/python3 bench/make_cogact_checkpoint.py --size base --dtype bf16 --out /tmp/cogact-base

Sizes: DINOv2 ViT-L/14-reg4 + SigLIP SO400M/14 at 224 px, the fused-GELU
projector, Llama-2 7B (32,064 embedding rows) and a DiT-S/B/L action head
(CogACT-Small/Base/Large). Every tensor a released checkpoint holds is
written, the unused ones too (SigLIP's attention-pooling head, the towers'
final norms, the DiT's history embedder, the LM head), so converting it
exercises what a real one does. CogACT-Base in BF16 is about 15 GB and takes
that much memory while torch.save writes it: run nothing else large beside
it. `--llm-layers N` makes a shallower LM for quick runs.
"""
import argparse
import collections
import json
import os

import torch

DIT = {"small": ("DiT-S", 6, 384), "base": ("DiT-B", 12, 768), "large": ("DiT-L", 24, 1024)}


def vit(prefix, width, depth, mlp, dino, out):
    out[f"{prefix}.pos_embed"] = (1, 256, width)
    out[f"{prefix}.patch_embed.proj.weight"] = (width, 3, 14, 14)
    out[f"{prefix}.patch_embed.proj.bias"] = (width,)
    if dino:
        out[f"{prefix}.cls_token"] = (1, 1, width)
        out[f"{prefix}.reg_token"] = (1, 4, width)
    for i in range(depth):
        b = f"{prefix}.blocks.{i}"
        for n in ("norm1", "norm2"):
            out[f"{b}.{n}.weight"] = (width,)
            out[f"{b}.{n}.bias"] = (width,)
        out[f"{b}.attn.qkv.weight"] = (3 * width, width)
        out[f"{b}.attn.qkv.bias"] = (3 * width,)
        out[f"{b}.attn.proj.weight"] = (width, width)
        out[f"{b}.attn.proj.bias"] = (width,)
        out[f"{b}.mlp.fc1.weight"] = (mlp, width)
        out[f"{b}.mlp.fc1.bias"] = (mlp,)
        out[f"{b}.mlp.fc2.weight"] = (width, mlp)
        out[f"{b}.mlp.fc2.bias"] = (width,)
        if dino:
            out[f"{b}.ls1.gamma"] = (width,)
            out[f"{b}.ls2.gamma"] = (width,)
    out[f"{prefix}.norm.weight"] = (width,)
    out[f"{prefix}.norm.bias"] = (width,)
    if not dino:  # SigLIP's attention-pooling head (unused by CogACT)
        p = f"{prefix}.attn_pool"
        out[f"{p}.latent"] = (1, 1, width)
        out[f"{p}.q.weight"], out[f"{p}.q.bias"] = (width, width), (width,)
        out[f"{p}.kv.weight"], out[f"{p}.kv.bias"] = (2 * width, width), (2 * width,)
        out[f"{p}.proj.weight"], out[f"{p}.proj.bias"] = (width, width), (width,)
        out[f"{p}.norm.weight"], out[f"{p}.norm.bias"] = (width,), (width,)
        out[f"{p}.mlp.fc1.weight"], out[f"{p}.mlp.fc1.bias"] = (mlp, width), (mlp,)
        out[f"{p}.mlp.fc2.weight"], out[f"{p}.mlp.fc2.bias"] = (width, mlp), (width,)


def shapes(size, llm_layers):
    groups = collections.OrderedDict()
    v = collections.OrderedDict()
    vit("dino_featurizer", 1024, 24, 4096, True, v)
    vit("siglip_featurizer", 1152, 27, 4304, False, v)
    groups["vision_backbone"] = v
    groups["projector"] = collections.OrderedDict(
        [("projector.0.weight", (8704, 2176)), ("projector.0.bias", (8704,)),
         ("projector.2.weight", (4096, 8704)), ("projector.2.bias", (4096,)),
         ("projector.4.weight", (4096, 4096)), ("projector.4.bias", (4096,))])
    lm = collections.OrderedDict()
    lm["llm.model.embed_tokens.weight"] = (32064, 4096)
    for i in range(llm_layers):
        p = f"llm.model.layers.{i}"
        for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
            lm[f"{p}.self_attn.{n}.weight"] = (4096, 4096)
        lm[f"{p}.mlp.gate_proj.weight"] = (11008, 4096)
        lm[f"{p}.mlp.up_proj.weight"] = (11008, 4096)
        lm[f"{p}.mlp.down_proj.weight"] = (4096, 11008)
        lm[f"{p}.input_layernorm.weight"] = (4096,)
        lm[f"{p}.post_attention_layernorm.weight"] = (4096,)
    lm["llm.model.norm.weight"] = (4096,)
    lm["llm.lm_head.weight"] = (32064, 4096)
    groups["llm_backbone"] = lm
    _, depth, h = DIT[size]
    a = collections.OrderedDict()
    a["net.x_embedder.linear.weight"], a["net.x_embedder.linear.bias"] = (h, 7), (h,)
    a["net.history_embedder.linear.weight"], a["net.history_embedder.linear.bias"] = (h, 7), (h,)
    a["net.t_embedder.mlp.0.weight"], a["net.t_embedder.mlp.0.bias"] = (h, 256), (h,)
    a["net.t_embedder.mlp.2.weight"], a["net.t_embedder.mlp.2.bias"] = (h, h), (h,)
    a["net.z_embedder.linear.weight"], a["net.z_embedder.linear.bias"] = (h, 4096), (h,)
    a["net.z_embedder.uncondition"] = (1, 4096)
    a["net.positional_embedding"] = (17, h)
    for i in range(depth):
        b = f"net.blocks.{i}"
        a[f"{b}.attn.qkv.weight"], a[f"{b}.attn.qkv.bias"] = (3 * h, h), (3 * h,)
        a[f"{b}.attn.proj.weight"], a[f"{b}.attn.proj.bias"] = (h, h), (h,)
        a[f"{b}.mlp.fc1.weight"], a[f"{b}.mlp.fc1.bias"] = (4 * h, h), (4 * h,)
        a[f"{b}.mlp.fc2.weight"], a[f"{b}.mlp.fc2.bias"] = (h, 4 * h), (h,)
    a["net.final_layer.linear.weight"], a["net.final_layer.linear.bias"] = (7, h), (7,)
    groups["action_model"] = a
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(DIT), default="base")
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--llm-layers", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    torch.manual_seed(args.seed)
    model, total = {}, 0
    for group, entries in shapes(args.size, args.llm_layers).items():
        sd = collections.OrderedDict()
        for name, shape in entries.items():
            fan_in = shape[-1] if len(shape) > 1 else 1
            t = torch.empty(shape, dtype=dtype)
            if name.endswith(("norm.weight", "layernorm.weight", ".gamma")) or "norm1.weight" in name or "norm2.weight" in name:
                t.fill_(1.0)
            elif name.endswith("bias"):
                t.zero_()
            else:
                t.normal_(0.0, fan_in ** -0.5)
            sd[name] = t
            total += t.numel()
        model[group] = sd
    os.makedirs(os.path.join(args.out, "checkpoints"), exist_ok=True)
    name = {"small": "CogACT-Small", "base": "CogACT-Base", "large": "CogACT-Large"}[args.size]
    path = os.path.join(args.out, "checkpoints", name + ".pt")
    torch.save({"model": model}, path)
    dit_type = DIT[args.size][0]
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"vla": {"vla_id": "prism-dinosiglip-224px+oxe+diffusion", "base_vlm": "prism-dinosiglip-224px+7b",
                           "data_mix": "oxe_magic_soup_plus_minus"},
                   "action_model_type": dit_type, "action_dim": 7, "future_action_window_size": 15,
                   "past_action_window_size": 0, "use_ema": False}, f, indent=2)
    fractal = {"q01": [-0.22, -0.14, -0.23, -0.35, -0.42, -0.43, 0.0],
               "q99": [0.18, 0.14, 0.21, 0.35, 0.32, 0.41, 1.0],
               "mask": [True] * 6 + [False]}
    bridge = {"q01": [-0.029, -0.041, -0.026, -0.085, -0.13, -0.17, 0.0],
              "q99": [0.028, 0.041, 0.04, 0.082, 0.13, 0.16, 1.0],
              "mask": [True] * 6 + [False]}
    with open(os.path.join(args.out, "dataset_statistics.json"), "w") as f:
        json.dump({"fractal20220817_data": {"action": fractal}, "bridge_orig": {"action": bridge}}, f, indent=2)
    print(f"wrote {path}: {total / 1e9:.3f} B parameters in {args.dtype}")


if __name__ == "__main__":
    main()
