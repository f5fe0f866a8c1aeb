"""Writes the parity fixtures (tests/fixtures/<case>/, with their plan fixtures, see
make_plan_fixtures) and the demo model (models/evla-tiny-random/).

    cd python && /usr/bin/python3 -m evla_ref.make_fixtures [--root ..]

Deterministic: weights and inputs come from numpy RandomState streams with
fixed seeds, the tokenizer trainer runs single-threaded on a fixed corpus and
torch runs on one thread, so a rerun on the same machine rewrites
byte-identical files.
"""
import argparse
import copy
import json
import os
import re

import numpy as np
import sentencepiece as spm
import torch

from . import images, make_plan_fixtures, safetensors_io, tokenizer
from .model import Policy, build_prompt_ids, forward_all, load_model, save_model

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
SIGLIP = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def encoder(name, prefix, image_size, patch, width, layers, heads, dino, norm_eps=1e-6):
    e = {"name": name, "prefix": prefix, "image_size": image_size, "patch_size": patch,
         "hidden_size": width, "num_layers": layers, "num_heads": heads,
         "intermediate_size": 4 * width, "class_token": dino, "num_registers": 4 if dino else 0,
         "layer_scale": dino, "feature_layer": layers - 2, "norm_eps": norm_eps}
    e.update(IMAGENET if dino else SIGLIP)
    return e


def base_config(name, encoders, hidden_dims, llm, head, norm, space_id, num_images=1):
    return {
        "evla_format": 1, "architecture": "cogact", "name": name,
        "vision": {"num_images": num_images, "encoders": encoders},
        "projector": {"prefix": "projector.projector", "hidden_dims": hidden_dims},
        "llm": dict({"prefix": "llm_backbone.llm", "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                     "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}, **llm),
        "prompt": {"tokenizer": "tokenizer.model", "template": tokenizer.TEMPLATE,
                   "lowercase_instruction": True, "space_token_id": space_id, "cognition_token_id": 2},
        "action_head": dict({"prefix": "action_model.net", "mlp_ratio": 4.0, "state_dim": 0,
                             "frequency_embedding_size": 256, "norm_eps": 1e-6, "train_steps": 100,
                             "beta_schedule": "squaredcos_cap_v2", "sample_steps": 10,
                             "cfg_scale": 1.5}, **head),
        "action_normalization": norm,
    }


# Bridge-like statistics (xyz, rpy deltas, gripper) for the 7-dim cases.
BRIDGE_NORM = {"q01": [-0.0294, -0.0411, -0.0259, -0.0849, -0.1299, -0.1697, 0.0],
               "q99": [0.0282, 0.0409, 0.0402, 0.0823, 0.1325, 0.1648, 1.0],
               "mask": [True, True, True, True, True, True, False], "gripper_index": 6}


def cases(space_id, vocab):
    """(directory relative to the repo root, config, instruction, seed)."""
    dual = base_config(
        "dual_gqa_cfg",
        [encoder("dino", "vision_backbone.dino_featurizer", 32, 8, 48, 3, 4, True),
         encoder("siglip", "vision_backbone.siglip_featurizer", 32, 8, 40, 3, 4, False)],
        [352, 64],
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab},
        {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "action_dim": 7, "chunk_size": 8,
         "cond_dim": 64},
        BRIDGE_NORM, space_id)

    # Exercises the other branches: one encoder, two images, MHA, no CFG, state,
    # 5 sampling steps, template without trailing space (space token appended),
    # case kept, rope_theta / eps values other than the defaults.
    single = base_config(
        "single_mha_nocfg",
        [encoder("siglip", "vision_backbone.featurizer", 28, 7, 36, 3, 3, False, norm_eps=1e-5)],
        [96],
        {"hidden_size": 48, "intermediate_size": 112, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab,
         "rms_norm_eps": 1e-6, "rope_theta": 500000.0},
        {"hidden_size": 24, "num_layers": 2, "num_heads": 2, "action_dim": 4, "chunk_size": 4,
         "cond_dim": 48, "state_dim": 5, "cfg_scale": 1.0, "sample_steps": 5},
        {"q01": [-0.05, -0.3, -1.0, 0.0], "q99": [0.05, 0.3, 1.0, 1.0],
         "mask": [True, False, True, True], "gripper_index": 3},
        space_id, num_images=2)
    single["prompt"]["template"] = tokenizer.TEMPLATE.rstrip(" ")
    single["prompt"]["lowercase_instruction"] = False

    tiny = base_config(
        "evla-tiny-random",
        [encoder("dino", "vision_backbone.dino_featurizer", 64, 8, 64, 4, 4, True),
         encoder("siglip", "vision_backbone.siglip_featurizer", 64, 8, 80, 4, 5, False)],
        [576, 128],
        {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": vocab},
        {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "action_dim": 7, "chunk_size": 16,
         "cond_dim": 128},
        BRIDGE_NORM, space_id)

    # Shaped for the tabletop benchmark (4-d actions, 4-d state): the model of
    # the closed-loop evaluation smoke tests.
    sim = base_config(
        "sim_random",
        [encoder("dino", "vision_backbone.dino_featurizer", 32, 8, 32, 3, 2, True)],
        [64],
        {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab},
        {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "action_dim": 4, "chunk_size": 8,
         "cond_dim": 48, "state_dim": 4},
        {"q01": [-0.04, -0.04, -0.04, 0.0], "q99": [0.04, 0.04, 0.04, 1.0],
         "mask": [True, True, True, False], "gripper_index": 3},
        space_id)

    return [("tests/fixtures/dual_gqa_cfg", dual, "Put the spoon on the towel", 1),
            ("tests/fixtures/sim_random", sim, "pick up the red cube", 4),
            ("tests/fixtures/single_mha_nocfg", single, "Put the Carrot on the plate", 2),
            ("models/evla-tiny-random", tiny, "put the eggplant in the basket", 3)]


# How strongly the DiT's x path dominates its residual stream (see init_weights).
X_GAIN = 4.0


# Extra weight gains inside the action head: the condition token (z_embedder,
# and attention, its only route to the action tokens) is made strong enough that
# cond and uncond eps differ visibly despite the dominant x path.
DIT_GAINS = (("z_embedder.linear.weight", 3.0), ("attn.proj.weight", 1.5), ("mlp.fc2.weight", 0.5),
             ("t_embedder.mlp.2.weight", 0.5))


def orthonormal_columns(w):
    """Gram-Schmidt on the columns of w [H, A], also orthogonal to the all-ones
    vector so LayerNorm's mean subtraction leaves the x path intact."""
    basis = [np.ones(w.shape[0]) / np.sqrt(w.shape[0])]
    for j in range(w.shape[1]):
        v = w[:, j].copy()
        for b in basis:
            v -= (v @ b) * b
        basis.append(v / np.linalg.norm(v))
    return np.stack(basis[1:], axis=1)


def init_weights(model, rng):
    """Random weights that keep every activation O(1) and every path non-trivial.

    Linear/conv weights ~ N(0, 1/fan_in) (variance preserving), norms ~1 with
    jitter, LayerScale gammas in [0.1, 1]. The DiT's final layer is tied to its
    x_embedder (W_x has orthogonal columns of norm g sqrt(H/A) and
    W_f ~ A/(H g) W_x^T, so final(LN(W_x x + rest)) ~ x / rms(x) plus a
    smaller random part), which
    makes the random network behave a little like a denoiser: DDIM then stays
    bounded and the actions land inside [-1, 1] instead of all saturating.
    """
    flat = model.flat_state_dict()
    dit_prefix = model.config["action_head"]["prefix"] + "."
    new = {}
    for name in sorted(flat):
        shape = tuple(flat[name].shape)
        leaf = name.rsplit(".", 1)[-1]
        n = lambda std: rng.normal(0.0, std, shape)
        if leaf == "gamma":
            v = rng.uniform(0.1, 1.0, shape)
        elif re.search(r"(norm\d?|_layernorm|\.norm)\.weight$", name):
            v = 1.0 + n(0.1)
        elif leaf == "bias":
            v = n(0.02)
        elif leaf in ("pos_embed", "positional_embedding"):
            v = n(0.3)
        elif leaf in ("cls_token", "reg_token", "uncondition"):
            v = n(1.0)
        elif name.endswith("embed_tokens.weight"):
            v = n(1.0)
        elif leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            gain = 1.0
            if name.startswith(dit_prefix):
                gain = next((g for pat, g in DIT_GAINS if name.endswith(pat)), 1.0)
            v = n(gain / np.sqrt(fan_in))
        else:
            raise ValueError(f"no init rule for {name}")
        new[name] = v
    ah = model.config["action_head"]
    p, a, h = ah["prefix"], ah["action_dim"], ah["hidden_size"]
    q = orthonormal_columns(new[f"{p}.x_embedder.linear.weight"])  # [H, A]
    wx = X_GAIN * np.sqrt(h / a) * q  # same scale as N(0, g^2/A), but W_x^T W_x = g^2 H/A I
    new[f"{p}.x_embedder.linear.weight"] = wx
    new[f"{p}.final_layer.linear.weight"] = (a / (h * X_GAIN)) * wx.T \
        + rng.normal(0.0, 0.1 / np.sqrt(h), wx.T.shape)
    with torch.no_grad():
        model.load_flat_state_dict({k: v.astype(np.float32) for k, v in new.items()})


def make_case(root, rel, cfg, instruction, seed, tok_bytes):
    d = os.path.join(root, rel)
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(seed)
    model = Policy(cfg).float().eval()
    init_weights(model, rng)
    save_model(model, cfg, d)
    with open(os.path.join(d, cfg["prompt"]["tokenizer"]), "wb") as f:
        f.write(tok_bytes)

    # Inputs. The model is reloaded from disk so the expected outputs are
    # exactly what a loader of these files must reproduce.
    model = load_model(d)
    sp = spm.SentencePieceProcessor(model_proto=tok_bytes)
    ids = build_prompt_ids(cfg, sp, instruction)
    size = cfg["vision"]["encoders"][0]["image_size"]
    imgs = [images.tabletop(size, rng) for _ in range(cfg["vision"]["num_images"])]
    ah = cfg["action_head"]
    state = rng.normal(0.0, 0.5, ah["state_dim"]).astype(np.float32) if ah["state_dim"] else None
    noise = rng.standard_normal((ah["chunk_size"], ah["action_dim"])).astype(np.float32)
    out = forward_all(model, imgs, ids, state, noise)

    tensors = {f"input.image.{k}": im for k, im in enumerate(imgs)}
    tensors["input.ids"] = np.asarray(ids, np.int64)
    if state is not None:
        tensors["input.state"] = state
    tensors["input.noise"] = noise
    tensors.update({k: np.asarray(v, np.float32) for k, v in out.items()})
    meta = {"instruction": instruction, "case": cfg["name"], "generator": "evla_ref.make_fixtures"}
    if rel.startswith("models/"):
        images.write_png(os.path.join(d, "example.png"), imgs[0])
    else:
        safetensors_io.write(os.path.join(d, "expected.safetensors"), tensors, meta)
    return d, out


# The layer surgery of the pruned fixture, in the original model's indexing:
# block 1 dropped whole, block 2 keeps only its MLP, block 0's MLP keeps the
# even channels. tests/model/test_prune.cpp applies the same as a plan.
PRUNE_DROP_BLOCK, PRUNE_ATTN_ONLY_DROPPED = 1, 2


def make_pruned_case(root, src_rel, dst_rel, instruction, tok_bytes):
    """A physically pruned copy of a fixture model (config `llm.layers`), with
    the PyTorch reference's outputs on it."""
    src, dst = os.path.join(root, src_rel), os.path.join(root, dst_rel)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    tensors, _ = safetensors_io.read(os.path.join(src, "model.safetensors"))
    llm = cfg["llm"]
    pre = llm["prefix"] + ".model.layers."
    ffn = llm["intermediate_size"]
    keep0 = np.arange(0, ffn, 2)
    out, new_index = {}, {0: 0, 2: 1}
    for name, t in tensors.items():
        if not name.startswith(pre):
            out[name] = t
            continue
        layer, leaf = name[len(pre):].split(".", 1)
        layer = int(layer)
        if layer == PRUNE_DROP_BLOCK:
            continue
        if layer == PRUNE_ATTN_ONLY_DROPPED and (leaf.startswith("self_attn.") or leaf.startswith("input_layernorm.")):
            continue
        if layer == 0 and leaf in ("mlp.gate_proj.weight", "mlp.up_proj.weight"):
            t = t[keep0]
        if layer == 0 and leaf == "mlp.down_proj.weight":
            t = t[:, keep0]
        out[f"{pre}{new_index[layer]}.{leaf}"] = np.ascontiguousarray(t)
    cfg["name"] = cfg["name"] + "_pruned"
    llm["num_hidden_layers"] = 2
    llm["layers"] = [{"attention": True, "mlp": True, "intermediate_size": len(keep0)},
                     {"attention": False, "mlp": True, "intermediate_size": ffn}]
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    safetensors_io.write(os.path.join(dst, "model.safetensors"), out, metadata={"format": "pt", "evla_format": "1"})
    with open(os.path.join(dst, cfg["prompt"]["tokenizer"]), "wb") as f:
        f.write(tok_bytes)
    # Same inputs as the source fixture.
    expected, meta = safetensors_io.read(os.path.join(src, "expected.safetensors"))
    model = load_model(dst)
    imgs = [expected[f"input.image.{k}"] for k in range(cfg["vision"]["num_images"])]
    state = expected.get("input.state")
    res = forward_all(model, imgs, expected["input.ids"].tolist(), state, expected["input.noise"])
    tensors = {k: v for k, v in expected.items() if k.startswith("input.")}
    tensors.update({k: np.asarray(v, np.float32) for k, v in res.items()})
    safetensors_io.write(os.path.join(dst, "expected.safetensors"), tensors, dict(meta, case=cfg["name"]))
    return dst, res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")),
                    help="repository root (default: the one holding this file)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # fixed reduction order -> byte-identical reruns
    tok = tokenizer.train()
    sp = spm.SentencePieceProcessor(model_proto=tok)
    for rel, cfg, instruction, seed in cases(sp.piece_to_id("\u2581"), sp.get_piece_size()):
        d, out = make_case(args.root, rel, copy.deepcopy(cfg), instruction, seed, tok)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        a = out["actions.normalized"]
        print(f"{rel}: {size / 1e6:.2f} MB, {len(out)} outputs, "
              f"normalized actions in (-1,1): {np.mean(np.abs(a) < 1):.0%}")
    d, _ = make_pruned_case(args.root, "tests/fixtures/dual_gqa_cfg", "tests/fixtures/dual_gqa_cfg_pruned",
                            "Put the spoon on the towel", tok)
    print(f"{os.path.relpath(d, args.root)}: pruned copy of dual_gqa_cfg")
    for case in make_plan_fixtures.CASES:
        for line in make_plan_fixtures.write_case(args.root, case):
            print(line)


if __name__ == "__main__":
    main()
