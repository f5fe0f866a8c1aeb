"""Small random CogACT checkpoint, deterministic from a seed.

Writes what a CogACT model repository holds, at tiny widths:
  ckpt.pt                  torch.save({"model": {"vision_backbone", "projector",
                           "llm_backbone", "action_model"}}), each group the state
                           dict of that module, with the tensor names of the
                           released checkpoints (prismatic's DINOv2-reg4 + SigLIP
                           towers from timm, the fused GELU-MLP projector, a
                           Hugging Face LlamaForCausalLM, CogACT's DiT-S head);
  config.json              CogACT's run config (vla.base_vlm, action_model_type);
  dataset_statistics.json  two datasets' action statistics.

Only torch is needed (no CogACT, timm or prismatic code): the test recreates
the checkpoint with this file, and tests/oracle/make_cogact_oracle.py imports
it and loads the same tensors into CogACT's own modules with strict=True, so
the names and shapes are those the original code builds. `digest()` hashes the
tensors; the oracle records it and the test checks it before comparing.

  /usr/bin/python3 tests/oracle/cogact_weights.py OUT_DIR
"""
import collections
import hashlib
import json
import os
import sys

import torch

SEED = 20251207

# Sizes. The towers and the LM are tiny; the vocabulary is Llama-2's 32,000
# pieces padded to 32,064 rows as prismatic does (a pad token, then a multiple
# of 64); the action head is CogACT's DiT-S as ActionModel builds it.
DINO = dict(depth=4, width=32, heads=2, mlp=128, registers=4, patch=14, grid=16)
SIGLIP = dict(depth=4, width=48, heads=3, mlp=120, patch=14, grid=16)
LLM = dict(width=64, layers=2, heads=4, kv_heads=4, ffn=172, vocab=32064)
DIT = dict(type="DiT-S", depth=6, width=384, heads=4, mlp_ratio=4, action_dim=7, chunk=16, freq=256)

# The --set values `evla convert cogact` needs for these widths (no preset
# knows them): head counts, nothing else.
CONVERT_SETS = [
    f"vision.encoders.0.num_heads={DINO['heads']}",
    f"vision.encoders.1.num_heads={SIGLIP['heads']}",
    f"llm.num_attention_heads={LLM['heads']}",
    f"llm.num_key_value_heads={LLM['kv_heads']}",
]

STATS = {
    "fractal20220817_data": {
        "action": {
            "q01": [-0.2, -0.3, -0.25, -0.4, -0.35, -0.6, 0.0],
            "q99": [0.21, 0.33, 0.27, 0.41, 0.36, 0.62, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
    "bridge_orig": {
        "action": {
            "q01": [-0.03, -0.04, -0.026, -0.08, -0.09, -0.13, 0.0],
            "q99": [0.028, 0.041, 0.04, 0.078, 0.077, 0.14, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
}

COGACT_CONFIG = {
    "vla": {"base_vlm": "prism-dinosiglip-224px+7b", "vla_id": "cogact-oracle-tiny"},
    "action_model_type": DIT["type"],
    "future_action_window_size": DIT["chunk"] - 1,
    "past_action_window_size": 0,
}


class _Gen:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, std=1.0, mean=0.0):
        return (torch.randn(*shape, generator=self.g, dtype=torch.float32) * std + mean).contiguous()

    def linear(self, sd, name, out_f, in_f, bias=True):
        sd[name + ".weight"] = self.normal(out_f, in_f, std=in_f ** -0.5)
        if bias:
            sd[name + ".bias"] = self.normal(out_f, std=0.02)

    def norm(self, sd, name, width, bias=True):
        sd[name + ".weight"] = self.normal(width, std=0.1, mean=1.0)
        if bias:
            sd[name + ".bias"] = self.normal(width, std=0.1)


def _vit(g, c, dino):
    sd = collections.OrderedDict()
    W, P, N = c["width"], c["patch"], c["grid"] ** 2
    if dino:
        sd["cls_token"] = g.normal(1, 1, W, std=0.5)
        sd["reg_token"] = g.normal(1, c["registers"], W, std=0.5)
    sd["pos_embed"] = g.normal(1, N, W, std=0.5)
    sd["patch_embed.proj.weight"] = g.normal(W, 3, P, P, std=(3 * P * P) ** -0.5)
    sd["patch_embed.proj.bias"] = g.normal(W, std=0.02)
    for i in range(c["depth"]):
        b = f"blocks.{i}."
        g.norm(sd, b + "norm1", W)
        g.linear(sd, b + "attn.qkv", 3 * W, W)
        g.linear(sd, b + "attn.proj", W, W)
        if dino:
            sd[b + "ls1.gamma"] = g.normal(W, std=0.1, mean=0.5)
        g.norm(sd, b + "norm2", W)
        g.linear(sd, b + "mlp.fc1", c["mlp"], W)
        g.linear(sd, b + "mlp.fc2", W, c["mlp"])
        if dino:
            sd[b + "ls2.gamma"] = g.normal(W, std=0.1, mean=0.5)
    g.norm(sd, "norm", W)
    if not dino:  # SigLIP's attention-pooling head (unused by prismatic, present in the checkpoint)
        sd["attn_pool.latent"] = g.normal(1, 1, W, std=0.5)
        g.linear(sd, "attn_pool.q", W, W)
        g.linear(sd, "attn_pool.kv", 2 * W, W)
        g.linear(sd, "attn_pool.proj", W, W)
        g.norm(sd, "attn_pool.norm", W)
        g.linear(sd, "attn_pool.mlp.fc1", c["mlp"], W)
        g.linear(sd, "attn_pool.mlp.fc2", W, c["mlp"])
    return sd


def state_dicts(seed=SEED):
    """{"vision_backbone", "projector", "llm_backbone", "action_model"} -> OrderedDict of tensors."""
    g = _Gen(seed)
    vision = collections.OrderedDict()
    for k, v in _vit(g, DINO, True).items():
        vision["dino_featurizer." + k] = v
    for k, v in _vit(g, SIGLIP, False).items():
        vision["siglip_featurizer." + k] = v

    fused = DINO["width"] + SIGLIP["width"]
    D = LLM["width"]
    proj = collections.OrderedDict()
    g.linear(proj, "projector.0", 4 * fused, fused)
    g.linear(proj, "projector.2", D, 4 * fused)
    g.linear(proj, "projector.4", D, D)

    llm = collections.OrderedDict()
    hd = D // LLM["heads"]
    llm["llm.model.embed_tokens.weight"] = g.normal(LLM["vocab"], D)
    for i in range(LLM["layers"]):
        b = f"llm.model.layers.{i}."
        g.linear(llm, b + "self_attn.q_proj", D, D, bias=False)
        g.linear(llm, b + "self_attn.k_proj", LLM["kv_heads"] * hd, D, bias=False)
        g.linear(llm, b + "self_attn.v_proj", LLM["kv_heads"] * hd, D, bias=False)
        g.linear(llm, b + "self_attn.o_proj", D, D, bias=False)
        g.linear(llm, b + "mlp.gate_proj", LLM["ffn"], D, bias=False)
        g.linear(llm, b + "mlp.up_proj", LLM["ffn"], D, bias=False)
        g.linear(llm, b + "mlp.down_proj", D, LLM["ffn"], bias=False)
        g.norm(llm, b + "input_layernorm", D, bias=False)
        g.norm(llm, b + "post_attention_layernorm", D, bias=False)
    g.norm(llm, "llm.model.norm", D, bias=False)
    g.linear(llm, "llm.lm_head", LLM["vocab"], D, bias=False)

    H, A = DIT["width"], DIT["action_dim"]
    head = collections.OrderedDict()
    head["net.positional_embedding"] = g.normal(DIT["chunk"] + 1, H, std=0.5)
    g.linear(head, "net.history_embedder.linear", H, A)
    g.linear(head, "net.x_embedder.linear", H, A)
    g.linear(head, "net.t_embedder.mlp.0", H, DIT["freq"])
    g.linear(head, "net.t_embedder.mlp.2", H, H)
    # CogACT's LabelEmbedder makes `uncondition` [1, 4096] whatever the token
    # size, so its own CFG runs only with a 4096-wide LM; at this LM width it is
    # [1, LM width], the shape CFG needs (make_cogact_oracle.py does the same).
    head["net.z_embedder.uncondition"] = g.normal(1, D)
    g.linear(head, "net.z_embedder.linear", H, D)
    for i in range(DIT["depth"]):
        b = f"net.blocks.{i}."
        g.linear(head, b + "attn.qkv", 3 * H, H)
        g.linear(head, b + "attn.proj", H, H)
        g.linear(head, b + "mlp.fc1", DIT["mlp_ratio"] * H, H)
        g.linear(head, b + "mlp.fc2", H, DIT["mlp_ratio"] * H)
    g.linear(head, "net.final_layer.linear", A, H)
    return collections.OrderedDict(
        [("vision_backbone", vision), ("projector", proj), ("llm_backbone", llm), ("action_model", head)])


def digest(groups):
    h = hashlib.sha256()
    for gname, sd in groups.items():
        for k, v in sd.items():
            h.update(f"{gname}.{k}{tuple(v.shape)}".encode())
            h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def write(out_dir, seed=SEED):
    os.makedirs(out_dir, exist_ok=True)
    groups = state_dicts(seed)
    torch.save({"model": groups}, os.path.join(out_dir, "ckpt.pt"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(COGACT_CONFIG, f, indent=2)
    with open(os.path.join(out_dir, "dataset_statistics.json"), "w") as f:
        json.dump(STATS, f, indent=2)
    return groups


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: cogact_weights.py OUT_DIR")
    print(digest(write(sys.argv[1])))
