"""PyTorch reference of the evla/CogACT policy, written from docs/format.md.

Plain modules, no timm/transformers. Each component's state_dict keys, joined
to its configured `prefix`, are exactly the flat tensor names of the format,
so `save_model`/`load_model` need no renaming table.

The reference runs in whatever dtype the modules have (fp32 for fixtures,
fp64 for accuracy checks). Constants that depend only on positions or
timesteps (RoPE angles, timestep sinusoid, pixel normalisation, diffusion
coefficients) are computed in float64 and then cast, so the fp32 result does
not depend on how a framework happens to round them.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import safetensors_io

# CogACT's real checkpoints store positional_embedding as [C+1, H]; docs/format.md
# specifies [1, C+1, H]. Written with this shape; both are accepted on load.
DIT_POS_EMBED_LEADING_ONE = False


# --------------------------------------------------------------------------- config

def validate_config(cfg):
    """Checks the rules of docs/format.md; raises ValueError naming the key."""
    def need(cond, key, what):
        if not cond:
            raise ValueError(f"config: {key}: {what}")

    need(cfg.get("evla_format") == 1, "evla_format", "must be 1")
    need(cfg.get("architecture") == "cogact", "architecture", "must be 'cogact'")
    encs = cfg["vision"]["encoders"]
    need(1 <= len(encs) <= 2, "vision.encoders", "needs 1 or 2 entries")
    grids = set()
    for i, e in enumerate(encs):
        k = f"vision.encoders[{i}]"
        need(e["image_size"] % e["patch_size"] == 0, k + ".image_size", "not a multiple of patch_size")
        need(e["hidden_size"] % e["num_heads"] == 0, k + ".hidden_size", "not a multiple of num_heads")
        need(0 <= e["feature_layer"] < e["num_layers"], k + ".feature_layer", "outside [0, num_layers)")
        grids.add(e["image_size"] // e["patch_size"])
    need(len(grids) == 1, "vision.encoders", "encoders differ in image_size/patch_size")
    llm = cfg["llm"]
    need(llm["hidden_size"] % llm["num_attention_heads"] == 0, "llm.hidden_size",
         "not a multiple of num_attention_heads")
    need(llm["num_attention_heads"] % llm["num_key_value_heads"] == 0, "llm.num_attention_heads",
         "not a multiple of num_key_value_heads")
    ah = cfg["action_head"]
    need(ah["cond_dim"] == llm["hidden_size"], "action_head.cond_dim", "must equal llm.hidden_size")
    need(ah["hidden_size"] % ah["num_heads"] == 0, "action_head.hidden_size", "not a multiple of num_heads")
    sampler = ah.get("sampler", "ddim")
    need(sampler in ("ddim", "ddpm"), "action_head.sampler", "must be ddim or ddpm")
    if sampler == "ddim":
        need(bool(ddim_timesteps(ah["train_steps"], ah.get("sample_steps", 10))), "action_head.sample_steps",
             "no integer stride gives that many steps")
    need(ah.get("beta_schedule", "squaredcos_cap_v2") == "squaredcos_cap_v2",
         "action_head.beta_schedule", "only squaredcos_cap_v2 is supported")
    an = cfg["action_normalization"]
    for key in ("q01", "q99", "mask"):
        if key in an:
            need(len(an[key]) == ah["action_dim"], "action_normalization." + key,
                 "needs action_dim entries")
    g = an.get("gripper_index", ah["action_dim"] - 1)
    need(-1 <= g < ah["action_dim"], "action_normalization.gripper_index", "out of range")


# --------------------------------------------------------------------------- ViT

class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x):  # [B,3,H,W] -> [B,N,D], patches in row-major order
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    """timm-style attention: fused qkv Linear with bias, then proj."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, gelu_approximate):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = gelu_approximate  # "none" (erf) in the ViTs, "tanh" in the DiT

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, hidden, eps, layer_scale):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, hidden, "none")
        self.ls2 = LayerScale(dim) if layer_scale else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTEncoder(nn.Module):
    """DINOv2-with-registers / SigLIP style ViT, truncated after feature_layer."""

    def __init__(self, ec):
        super().__init__()
        self.cfg = ec
        d, p = ec["hidden_size"], ec["patch_size"]
        n = (ec["image_size"] // p) ** 2
        self.patch_embed = PatchEmbed(p, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        if ec.get("class_token", False):
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if ec.get("num_registers", 0) > 0:
            self.reg_token = nn.Parameter(torch.zeros(1, ec["num_registers"], d))
        self.blocks = nn.ModuleList(
            ViTBlock(d, ec["num_heads"], ec["intermediate_size"], ec.get("norm_eps", 1e-6),
                     ec.get("layer_scale", False))
            for _ in range(ec["num_layers"]))
        self.num_prefix = int(ec.get("class_token", False)) + ec.get("num_registers", 0)

    def pixels(self, images_u8, dtype):
        """list of [S,S,3] uint8 -> [B,3,S,S] normalised as (v/255 - mean)/std."""
        s = self.cfg["image_size"]
        mean = np.asarray(self.cfg.get("image_mean", [0.5, 0.5, 0.5]), np.float64)
        std = np.asarray(self.cfg.get("image_std", [0.5, 0.5, 0.5]), np.float64)
        out = []
        for im in images_u8:
            im = np.asarray(im)
            if im.shape != (s, s, 3) or im.dtype != np.uint8:
                raise ValueError(f"image must be uint8 [{s},{s},3], got {im.dtype} {im.shape}")
            out.append(((im.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out)).to(dtype)

    def forward(self, x):
        """[B,3,S,S] pixels -> [B,N,D] patch tokens of block feature_layer, no final norm."""
        x = self.patch_embed(x) + self.pos_embed
        prefix = []
        if hasattr(self, "cls_token"):
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if hasattr(self, "reg_token"):
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1)
        for blk in self.blocks[: self.cfg["feature_layer"] + 1]:
            x = blk(x)
        return x[:, self.num_prefix:]


def make_projector(in_dim, hidden_dims, out_dim):
    """Linear, GELU(erf), ..., Linear: Linear layers at indices 0, 2, 4, ..."""
    dims = [in_dim] + list(hidden_dims) + [out_dim]
    layers = []
    for i in range(len(dims) - 1):
        if i:
            layers.append(nn.GELU())
        layers.append(nn.Linear(dims[i], dims[i + 1]))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- Llama

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rope_cos_sin(positions, head_dim, theta, dtype):
    """HF Llama rotate-half RoPE tables [L, head_dim] (angles in float64)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = np.outer(np.asarray(positions, np.float64), inv)
    ang = np.concatenate([ang, ang], axis=-1)
    return torch.from_numpy(np.cos(ang)).to(dtype), torch.from_numpy(np.sin(ang)).to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, self.nh, self.nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = d // self.nh
        self.q_proj = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x, cos, sin, keys=None):
        """keys, when a list: receives the rotated queries and keys ([1, heads, n, hd]
        each, before GQA's repeat), which token selection scores with."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if keys is not None:
            keys.extend([q, k])
        # GQA: query head h reads kv head h // (nh / nkv), as HF's repeat_kv.
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)
        att = att.masked_fill(causal, float("-inf")).softmax(dim=-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, n, self.nh * self.hd))


class LlamaMLP(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.gate_proj = nn.Linear(d, ffn, bias=False)
        self.up_proj = nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    """A decoder block. `spec` (from the optional config list `llm.layers`)
    describes a physically pruned block: sub-layers may be absent and the MLP
    may be narrower than `intermediate_size`."""

    def __init__(self, c, spec=None):
        super().__init__()
        spec = spec or {}
        self.has_attn = spec.get("attention", True)
        self.has_mlp = spec.get("mlp", True)
        if self.has_attn:
            self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
            self.self_attn = LlamaAttention(c)
        if self.has_mlp:
            self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
            self.mlp = LlamaMLP(c["hidden_size"], spec.get("intermediate_size", c["intermediate_size"]))

    def forward(self, x, cos, sin):
        if self.has_attn:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        if self.has_mlp:
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class LlamaBody(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        specs = c.get("layers") or [None] * c["num_hidden_layers"]
        self.layers = nn.ModuleList(LlamaLayer(c, specs[i]) for i in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class Llama(nn.Module):
    """HF LlamaForCausalLM layout: `model.*` plus optional `lm_head`."""

    def __init__(self, c, with_lm_head=True):
        super().__init__()
        self.cfg = c
        self.model = LlamaBody(c)
        if with_lm_head and not c.get("tie_word_embeddings", False):
            self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def run(self, embeds):
        """[1,L,d] input embeddings -> (inputs of each layer + last output (pre-norm), final-norm)."""
        c = self.cfg
        cos, sin = rope_cos_sin(range(embeds.shape[1]), c["hidden_size"] // c["num_attention_heads"],
                                c.get("rope_theta", 10000.0), embeds.dtype)
        hidden = [embeds]
        x = embeds
        for layer in self.model.layers:
            x = layer(x, cos, sin)
            hidden.append(x)
        return hidden, self.model.norm(x)

    def logits(self, normed):
        w = self.lm_head.weight if hasattr(self, "lm_head") else self.model.embed_tokens.weight
        return normed @ w.t()


@torch.no_grad()
def lm_forward(llm, ids):
    """LM only, HF semantics, positions 0..L-1, no cache.

    Returns dict: hidden (list of [L,d]: input of each layer, then the last
    layer's output before the final norm), final ([L,d], after final norm;
    HF's last `hidden_states` entry) and logits ([L,V]).
    """
    ids = torch.as_tensor(np.asarray(ids, np.int64)).view(1, -1)
    hidden, normed = llm.run(llm.model.embed_tokens(ids))
    return {"hidden": [h[0] for h in hidden], "final": normed[0], "logits": llm.logits(normed)[0]}


def greedy_generate(llm, ids, steps):
    ids = list(ids)
    for _ in range(steps):
        ids.append(int(lm_forward(llm, ids)["logits"][-1].argmax()))
    return ids


# --------------------------------------------------------------------------- DiT

class Linear1(nn.Module):
    """A module whose only child is `linear` (CogACT's embedders and final layer)."""

    def __init__(self, i, o):
        super().__init__()
        self.linear = nn.Linear(i, o)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden, freq):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t, dtype):
        """t: list of timestep values -> [B,H]. Sinusoid is [cos, sin], 10000 max period."""
        half = self.freq // 2
        f = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
        args = np.asarray(t, np.float64)[:, None] * f[None]
        emb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
        if self.freq % 2:
            emb = np.concatenate([emb, np.zeros_like(emb[:, :1])], axis=-1)
        return self.mlp(torch.from_numpy(emb).to(dtype))


class ZEmbedder(nn.Module):
    def __init__(self, cond_dim, hidden):
        super().__init__()
        self.linear = nn.Linear(cond_dim, hidden)
        # CogACT quirk: [1, cond_dim] regardless of batch/token layout.
        self.uncondition = nn.Parameter(torch.zeros(1, cond_dim))


class DiTBlock(nn.Module):
    def __init__(self, h, heads, mlp_hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(h, eps=eps, elementwise_affine=False)
        self.attn = Attention(h, heads)
        self.norm2 = nn.LayerNorm(h, eps=eps, elementwise_affine=False)
        self.mlp = Mlp(h, mlp_hidden, "tanh")

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    def __init__(self, h, out, eps):
        super().__init__()
        self.norm_final = nn.LayerNorm(h, eps=eps, elementwise_affine=False)
        self.linear = nn.Linear(h, out)

    def forward(self, x):
        return self.linear(self.norm_final(x))


class DiT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfg = c
        h, a, eps = c["hidden_size"], c["action_dim"], c.get("norm_eps", 1e-6)
        self.x_embedder = Linear1(a, h)
        self.t_embedder = TimestepEmbedder(h, c.get("frequency_embedding_size", 256))
        self.z_embedder = ZEmbedder(c["cond_dim"], h)
        if c.get("state_dim", 0) > 0:
            self.s_embedder = Linear1(c["state_dim"], h)
        rows = c["chunk_size"] + 1
        shape = (1, rows, h) if DIT_POS_EMBED_LEADING_ONE else (rows, h)
        self.positional_embedding = nn.Parameter(torch.zeros(shape))
        self.blocks = nn.ModuleList(
            DiTBlock(h, c["num_heads"], int(h * c.get("mlp_ratio", 4.0)), eps)
            for _ in range(c["num_layers"]))
        self.final_layer = FinalLayer(h, a, eps)

    def forward(self, x, t, z, state=None):
        """x [B,C,A], t list of B timesteps, z [B,cond_dim], state [B,state_dim] -> eps [B,C,A]."""
        cond = self.t_embedder(t, x.dtype) + self.z_embedder.linear(z)
        if hasattr(self, "s_embedder"):
            cond = cond + self.s_embedder.linear(state)
        h = torch.cat([cond[:, None], self.x_embedder.linear(x)], dim=1)
        h = h + self.positional_embedding.reshape(1, -1, h.shape[-1])
        for blk in self.blocks:
            h = blk(h)
        return self.final_layer(h)[:, 1:]


# --------------------------------------------------------------------------- diffusion

def squaredcos_alphas_cumprod(train_steps, max_beta=0.999):
    """improved-diffusion's squaredcos_cap_v2: betas from cos^2 alpha_bar, capped, then cumprod."""
    ab = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - ab((i + 1) / train_steps) / ab(i / train_steps), max_beta)
                      for i in range(train_steps)], dtype=np.float64)
    return np.cumprod(1.0 - betas)


def ddim_timesteps(train_steps, sample_steps):
    """CogACT's "ddimN" respacing, in sampling order: 0, k, 2k, ... for the smallest integer
    stride k that gives exactly N steps (N = 1: step 50); [] when none does."""
    if sample_steps == 1:
        return [50] if train_steps > 50 else []
    for k in range(1, train_steps):
        if len(range(0, train_steps, k)) == sample_steps:
            return list(reversed(range(0, train_steps, k)))
    return []


def ddim_schedule(train_steps, sample_steps):
    """[(t, acp, acp_prev)] in sampling order; acp_prev = 1 at the last step."""
    acp = squaredcos_alphas_cumprod(train_steps)
    ts = ddim_timesteps(train_steps, sample_steps)
    return [(t, acp[t], acp[ts[k + 1]] if k + 1 < len(ts) else 1.0) for k, t in enumerate(ts)]


def ddpm_schedule(train_steps):
    """[(t, acp, c1, c2, sigma)] for t = T-1 .. 0: the posterior mean x <- c1*x0 + c2*x and
    the clipped "fixed small" standard deviation (0 at t = 0)."""
    acp = squaredcos_alphas_cumprod(train_steps)
    out = []
    for t in reversed(range(train_steps)):
        prev = acp[t - 1] if t > 0 else 1.0
        beta = 1.0 - acp[t] / prev
        var = beta * (1.0 - prev) / (1.0 - acp[t])
        out.append((t, acp[t], beta * math.sqrt(prev) / (1.0 - acp[t]),
                    (1.0 - prev) * math.sqrt(1.0 - beta) / (1.0 - acp[t]),
                    0.0 if t == 0 else math.exp(0.5 * math.log(var))))
    return out


# --------------------------------------------------------------------------- policy

class Policy(nn.Module):
    def __init__(self, cfg, with_lm_head=True):
        super().__init__()
        validate_config(cfg)
        self.config = cfg
        self.encoders = nn.ModuleList(ViTEncoder(e) for e in cfg["vision"]["encoders"])
        width = sum(e["hidden_size"] for e in cfg["vision"]["encoders"])
        self.projector = make_projector(width, cfg["projector"]["hidden_dims"], cfg["llm"]["hidden_size"])
        self.llm = Llama(cfg["llm"], with_lm_head)
        self.dit = DiT(cfg["action_head"])

    def components(self):
        """(prefix, module) pairs; module state_dict keys join to the flat names."""
        out = [(e["prefix"], m) for e, m in zip(self.config["vision"]["encoders"], self.encoders)]
        return out + [(self.config["projector"]["prefix"], self.projector),
                      (self.config["llm"]["prefix"], self.llm),
                      (self.config["action_head"]["prefix"], self.dit)]

    def flat_state_dict(self):
        flat = {}
        for prefix, mod in self.components():
            for k, v in mod.state_dict().items():
                flat[f"{prefix}.{k}"] = v
        return flat

    def load_flat_state_dict(self, tensors, strict=True):
        """Loads flat-named tensors; unknown names are ignored (real checkpoints carry
        unused ones, e.g. the ViTs' final norm); missing ones are an error."""
        for prefix, mod in self.components():
            sd = mod.state_dict()
            for k, ref in sd.items():
                name = f"{prefix}.{k}"
                if name not in tensors:
                    if strict:
                        raise KeyError(f"missing tensor {name}")
                    continue
                t = torch.as_tensor(np.asarray(tensors[name]))
                if t.numel() != ref.numel() or (tuple(t.shape) != tuple(ref.shape)
                                                and not k == "positional_embedding"):
                    raise ValueError(f"tensor {name}: expected {tuple(ref.shape)}, got {tuple(t.shape)}")
                ref.copy_(t.reshape(ref.shape).to(ref.dtype))


def build_prompt_ids(cfg, sp, instruction):
    """Step 3 of the forward pass: template -> SentencePiece ids with BOS, space, cognition."""
    p = cfg["prompt"]
    text = instruction.lower() if p.get("lowercase_instruction", False) else instruction
    text = text.replace("<image>", "")  # as prismatic's PurePromptBuilder does to the turn
    ids = [cfg["llm"].get("bos_token_id", 1)] + list(sp.encode(p["template"].replace("{instruction}", text)))
    space = p.get("space_token_id", -1)
    if space >= 0 and ids[-1] != space:
        ids.append(space)
    ids.append(p["cognition_token_id"])
    return ids


def postprocess(cfg, x, unnorm_key=None):
    """Clip, threshold the gripper in normalised space, un-normalise masked dims
    (with the statistics of dataset `unnorm_key` when the config keeps several)."""
    an, a = cfg["action_normalization"], cfg["action_head"]["action_dim"]
    x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
    g = an.get("gripper_index", a - 1)
    if g >= 0:
        x[:, g] = np.where(x[:, g] < 0.5, 0.0, 1.0)
    stats = an
    if "datasets" in an:
        keys = sorted(an["datasets"])
        if unnorm_key is None and len(keys) != 1:
            raise ValueError(f"choose one with unnorm_key: {', '.join(keys)}")
        stats = an["datasets"][unnorm_key or keys[0]]
    q01 = np.asarray(stats["q01"], np.float64)
    q99 = np.asarray(stats["q99"], np.float64)
    mask = np.asarray(stats.get("mask", [True] * a), bool)
    out = np.where(mask, 0.5 * (x + 1.0) * (q99 - q01) + q01, x)
    return x, out


# The policy's stages (steps 1-6 of docs/format.md). Each takes and returns
# torch tensors in the model's dtype; `record`, when given, collects the
# intermediates under their fixture names.

def model_dtype(model):
    return model.projector[0].weight.dtype


def encode_images(model, images_uint8_list, record=None):
    """Step 1: per encoder [num_images*N, D_e] (the images' token sets follow one another)."""
    if len(images_uint8_list) != model.config["vision"].get("num_images", 1):
        raise ValueError("number of images != vision.num_images")
    feats = []
    for e, enc in enumerate(model.encoders):
        f = enc(enc.pixels(images_uint8_list, model_dtype(model)))  # [num_images, N, D_e]
        f = f.reshape(-1, f.shape[-1])
        if record is not None:
            record[f"vision.{e}.features"] = f
        feats.append(f)
    return feats


def project(model, feats, record=None):
    """Step 2: projector on the channel-concatenated features -> [num_images*N, d]."""
    vis = model.projector(torch.cat(feats, dim=-1))
    if record is not None:
        record["projector.out"] = vis
    return vis


def cognition_feature(model, ids, vis, record=None):
    """Steps 3-4: LM on [BOS, visual tokens, rest of ids]; final-norm hidden at the last position."""
    emb = model.llm.model.embed_tokens(torch.as_tensor(np.asarray(ids, np.int64)))
    # (the LM may run in another dtype than the towers: an fp32 LM with int8 linears)
    hidden, normed = model.llm.run(torch.cat([emb[:1], vis.to(emb.dtype), emb[1:]], dim=0)[None])
    if record is not None:
        for l, h in enumerate(hidden):
            record[f"llm.hidden.{l}"] = h[0]
        record["llm.cognition"] = normed[0, -1]
    return normed[0, -1].to(model_dtype(model))


def sample_actions(model, cognition, state, noise, record=None, step_noise=None, dit=None):
    """Step 5: DDIM (eta 0) or DDPM with CogACT's classifier-free guidance -> x [C, A].
    DDPM adds step_noise[s] ([steps, C, A]) at step s. `dit`: what predicts ε at each
    step (default the model's head; plans.CachedDiT under a cache plan)."""
    ah = model.config["action_head"]
    dtype = model_dtype(model)
    scale = ah.get("cfg_scale", 1.0)
    use_cfg = scale > 1.0
    # The start is noise_scale · noise, scaled in float32 as the runtime scales it.
    x = torch.as_tensor(np.asarray(noise, np.float32) * np.float32(ah.get("noise_scale", 1.0))).to(dtype)[None]
    z = cognition[None]
    st = None
    if ah.get("state_dim", 0) > 0:
        st = torch.as_tensor(np.asarray(state)).to(dtype)[None]
    if use_cfg:  # CogACT: batch [x, x], z = [cognition, uncondition]; state goes to both halves
        x = torch.cat([x, x])
        z = torch.cat([z, model.dit.z_embedder.uncondition.to(dtype)])
        st = None if st is None else torch.cat([st, st])
    k = lambda v: torch.tensor(v, dtype=dtype)
    ddpm = ah.get("sampler", "ddim") == "ddpm"
    steps = ddpm_schedule(ah["train_steps"]) if ddpm else ddim_schedule(ah["train_steps"], ah.get("sample_steps", 10))
    for s, step in enumerate(steps):
        t, acp = step[0], step[1]
        eps = (dit or model.dit)(x, [t] * x.shape[0], z, st)
        if use_cfg:
            c, u = eps.chunk(2)
            half = u + scale * (c - u)
            eps = torch.cat([half, half])
        # improved-diffusion's updates (no clipping of x0); coefficients in float64, cast.
        recip, recipm1 = k(math.sqrt(1.0 / acp)), k(math.sqrt(1.0 / acp - 1.0))
        x0 = recip * x - recipm1 * eps
        if ddpm:
            z_s = torch.as_tensor(np.asarray(step_noise[s], np.float32)).to(dtype)[None]
            x = k(step[2]) * x0 + k(step[3]) * x + k(step[4]) * z_s
        else:
            acp_prev = step[2]
            eps_x0 = (recip * x - x0) / recipm1
            x = x0 * k(math.sqrt(acp_prev)) + k(math.sqrt(1.0 - acp_prev)) * eps_x0
        if record is not None:
            record[f"dit.eps.{s}"] = eps[0]
            record[f"dit.x.{s}"] = x[0]
    return x[0]


@torch.no_grad()
def forward_all(model, images_uint8_list, ids, state, noise, step_noise=None):
    """Runs the whole policy; returns every intermediate named as in the fixture table.

    images_uint8_list: num_images arrays [S,S,3] uint8 (already at image_size);
    ids: prompt ids incl. BOS/space/cognition; state: [state_dim] or None;
    noise: [C,A]. Outputs are numpy arrays in the model's dtype.
    """
    rec = {}
    feats = encode_images(model, images_uint8_list, rec)
    vis = project(model, feats, rec)
    cog = cognition_feature(model, ids, vis, rec)
    x = sample_actions(model, cog, state, noise, rec, step_noise)
    # Step 6 in float64, cast back (an affine map: at most one rounding).
    norm, act = postprocess(model.config, x.double().numpy())
    res = {k: v.detach().numpy() for k, v in rec.items()}
    np_dtype = res["llm.cognition"].dtype
    res["actions.normalized"] = norm.astype(np_dtype)
    res["actions"] = act.astype(np_dtype)
    return res


# --------------------------------------------------------------------------- I/O

def _read_dir_tensors(d):
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        return safetensors_io.read(single)[0]
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(safetensors_io.read(os.path.join(d, shard))[0])
    return tensors


def load_model(d, dtype=torch.float32):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    tensors = _read_dir_tensors(d)
    # lm_head is only needed for logits; the policy runs without it.
    model = Policy(cfg, with_lm_head=cfg["llm"]["prefix"] + ".lm_head.weight" in tensors)
    model = model.to(dtype).eval()
    with torch.no_grad():
        model.load_flat_state_dict(tensors)
    return model


def load_model_16bit(d, dtype=torch.bfloat16):
    """The model built directly in a 16-bit dtype and filled one shard at a time,
    bfloat16 tensors copied as they are: a full-size checkpoint (15 GB in BF16)
    never has an fp32 copy, which would not fit beside it (timing runs only)."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    single = os.path.join(d, "model.safetensors")
    if os.path.exists(single):
        shards = [single]
    else:
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            shards = [os.path.join(d, s) for s in sorted(set(json.load(f)["weight_map"].values()))]
    # Built in `dtype`, without the random initialisation every parameter is about to lose.
    inits = ("kaiming_uniform_", "uniform_", "normal_", "trunc_normal_", "zeros_", "ones_", "xavier_uniform_")
    saved = {n: getattr(torch.nn.init, n) for n in inits}
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        for n in inits:
            setattr(torch.nn.init, n, lambda t, *a, **k: t)
        model = Policy(cfg, with_lm_head=False).eval()
    finally:
        torch.set_default_dtype(default)
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)
    state = {f"{prefix}.{k}": ref for prefix, mod in model.components() for k, ref in mod.state_dict().items()}
    loaded = set()
    with torch.no_grad():
        for shard in shards:
            tensors = safetensors_io.read(shard, bf16_as_float32=False)[0]
            for name, arr in tensors.items():
                if name not in state:
                    continue
                ref = state[name]
                t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16) if arr.dtype == np.uint16 \
                    else torch.from_numpy(np.ascontiguousarray(arr))
                if t.numel() != ref.numel():
                    raise ValueError(f"tensor {name}: expected {tuple(ref.shape)}, got {tuple(t.shape)}")
                ref.copy_(t.reshape(ref.shape).to(ref.dtype))
                loaded.add(name)
            del tensors
    missing = sorted(set(state) - loaded)
    if missing:
        raise KeyError(f"missing tensors: {missing[:5]}")
    return model


def load_hf_llama(d, dtype=torch.float32):
    """An HF LlamaForCausalLM directory (tensor names without any prefix)."""
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    llm = Llama(c).to(dtype).eval()
    tensors = _read_dir_tensors(d)
    with torch.no_grad():
        for k, ref in llm.state_dict().items():
            ref.copy_(torch.from_numpy(tensors[k]).to(dtype))
    return llm


def save_model(model, config, d, dtype=np.float32):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    tensors = {k: v.detach().cpu().numpy().astype(dtype) for k, v in model.flat_state_dict().items()}
    safetensors_io.write(os.path.join(d, "model.safetensors"), tensors,
                         metadata={"format": "pt", "evla_format": "1"})
