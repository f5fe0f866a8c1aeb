"""SmolVLA (LeRobot) in PyTorch, from a checkpoint in LeRobot's layout: the
reference the C++ family (src/model/smolvla.*) is checked against.

Written from the facts of LeRobot's policies/smolvla and transformers'
SmolVLM code (docs/format.md, "SmolVLA"), not from their text:
- images resized with padding (bilinear, aspect kept, padded left and top
  with 0) to the config's resize_imgs_with_padding, scaled to [-1, 1];
- SigLIP encoder (patch conv, learned positions, pre-LN blocks with tanh GELU,
  post-layernorm), pixel shuffle by scale_factor, a bias-free projection to
  the text width, times sqrt(width); language embeddings times sqrt(width);
  the normalised, zero-padded state through state_proj (not scaled);
- the VLM's first num_vlm_layers Llama layers over the prefix (images and
  language attend to each other, the state token to everything; padding
  dropped, positions counting valid tokens), keeping each layer's keys
  (after RoPE, base 10000) and values;
- the action expert: per VLM layer one narrower Llama layer; layers whose index
  is a multiple of self_attn_every_n_layers attend to [prefix | suffix] (the
  suffix causal, at positions after the prefix); the others cross-attend to
  the VLM layer's cached keys and values through their own k/v projections,
  queries at positions 0..chunk-1;
- flow matching: num_steps Euler steps from t = 1 with dt = -1/num_steps on
  x = noise [chunk, max_action_dim]; the suffix is action_in_proj(x) joined
  with a sine-cosine embedding of t through action_time_mlp_in, SiLU,
  action_time_mlp_out; velocity = action_out_proj(expert norm(out));
- actions = x[:, :action_dim] * std + mean.
"""
import json
import math
import os

import numpy as np
import torch

from . import safetensors_io

PREFIX = "model."
VLM = PREFIX + "vlm_with_expert.vlm.model."
EXPERT = PREFIX + "vlm_with_expert.lm_expert."

# The VLMs smolvla configs name, as their own configs give them.
VLM_CONFIGS = {
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": {
        "text_hidden": 960, "text_heads": 15, "text_kv_heads": 5, "head_dim": 64, "text_intermediate": 2560,
        "rms_norm_eps": 1e-5, "vocab_size": 49280, "vision_hidden": 768, "vision_layers": 12, "vision_heads": 12,
        "vision_intermediate": 3072, "vision_image_size": 512, "patch_size": 16, "scale_factor": 4,
        "vision_eps": 1e-6},
}


def expert_intermediate(width):
    """LeRobot's rule for the expert's MLP width: 2/3 of 4x, up to a multiple of 256."""
    h = int(4 * int(2 * width / 3))
    return 256 * ((h + 255) // 256)


class Config:
    def __init__(self, j):
        self.raw = j
        vlm = dict(VLM_CONFIGS.get(j.get("vlm_model_name", ""), {}))
        vlm.update(j.get("evla_vlm", {}))
        self.vlm = vlm
        self.chunk = j.get("chunk_size", 50)
        self.n_action_steps = j.get("n_action_steps", 50)
        self.max_state_dim = j.get("max_state_dim", 32)
        self.max_action_dim = j.get("max_action_dim", 32)
        self.resize = tuple(j.get("resize_imgs_with_padding", [512, 512]))  # (width, height)
        self.tokenizer_max_length = j.get("tokenizer_max_length", 48)
        self.num_steps = j.get("num_steps", 10)
        self.num_vlm_layers = j.get("num_vlm_layers", 16)
        n_exp = j.get("num_expert_layers", -1)
        self.num_expert_layers = n_exp if n_exp > 0 else self.num_vlm_layers
        self.self_attn_every = j.get("self_attn_every_n_layers", 2)
        self.expert_width = int(vlm["text_hidden"] * j.get("expert_width_multiplier", 0.75))
        self.expert_intermediate = expert_intermediate(self.expert_width)
        self.min_period = j.get("min_period", 4e-3)
        self.max_period = j.get("max_period", 4.0)
        feats = j.get("input_features", {})
        self.cameras = [k for k, v in feats.items() if v.get("type") == "VISUAL"]
        self.state_dim = feats.get("observation.state", {}).get("shape", [0])[0]
        self.action_dim = j.get("output_features", {}).get("action", {}).get("shape", [0])[0]


def resize_with_pad(img, width, height):
    """img: [3, H, W] floats in [0, 1] -> [3, height, width] (bilinear, padded left/top with 0)."""
    _, h, w = img.shape
    ratio = max(w / width, h / height)
    rh, rw = int(h / ratio), int(w / ratio)
    out = torch.nn.functional.interpolate(img[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    return torch.nn.functional.pad(out, (max(0, width - rw), 0, max(0, height - rh), 0), value=0.0)


def rope(x, pos, theta=10000.0):
    """x: [T, H, hd], rotate-half with frequencies theta^(-2i/hd)."""
    hd = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = pos.to(torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attend(q, k, v, allowed):
    """q [Tq, Hq, hd], k/v [Tk, Hkv, hd], allowed [Tq, Tk] bool -> [Tq, Hq*hd]."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed[None], torch.finfo(torch.float32).min)
    p = s.softmax(-1)
    return torch.einsum("hqk,khd->qhd", p, v).reshape(q.shape[0], -1)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class SmolVLA:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = Config(json.load(f))
        self.w = {k: torch.from_numpy(np.asarray(v, dtype=np.float32))
                  for k, v in safetensors_io.read(os.path.join(model_dir, "model.safetensors"))[0].items()}
        self.stats = read_stats(model_dir)
        mapping = self.cfg.raw.get("normalization_mapping", {})
        for feature, kind in (("observation.state", "STATE"), ("action", "ACTION")):
            if mapping.get(kind, "MEAN_STD") == "IDENTITY":
                self.stats.pop(feature, None)

    def lin(self, name, x):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y + b if b is not None else y

    # --- vision ---
    def vision(self, img):
        """img [3, S, S] in [-1, 1] -> [tokens, text_hidden] (already scaled by sqrt(hidden))."""
        v = self.cfg.vlm
        P, D, H = v["patch_size"], v["vision_hidden"], v["vision_heads"]
        V = VLM + "vision_model."
        x = torch.nn.functional.conv2d(img[None], self.w[V + "embeddings.patch_embedding.weight"],
                                       self.w[V + "embeddings.patch_embedding.bias"], stride=P)
        x = x.flatten(2).transpose(1, 2)[0] + self.w[V + "embeddings.position_embedding.weight"]
        T = x.shape[0]
        eps = v["vision_eps"]
        for i in range(v["vision_layers"]):
            L = V + f"encoder.layers.{i}."
            h = torch.nn.functional.layer_norm(x, (D,), self.w[L + "layer_norm1.weight"], self.w[L + "layer_norm1.bias"], eps)
            q = self.lin(L + "self_attn.q_proj", h).view(T, H, -1)
            k = self.lin(L + "self_attn.k_proj", h).view(T, H, -1)
            vv = self.lin(L + "self_attn.v_proj", h).view(T, H, -1)
            x = x + self.lin(L + "self_attn.out_proj", attend(q, k, vv, torch.ones(T, T, dtype=torch.bool)))
            h = torch.nn.functional.layer_norm(x, (D,), self.w[L + "layer_norm2.weight"], self.w[L + "layer_norm2.bias"], eps)
            h = torch.nn.functional.gelu(self.lin(L + "mlp.fc1", h), approximate="tanh")
            x = x + self.lin(L + "mlp.fc2", h)
        x = torch.nn.functional.layer_norm(x, (D,), self.w[V + "post_layernorm.weight"], self.w[V + "post_layernorm.bias"], eps)
        # Pixel shuffle: s x s neighbouring patches become one token of s*s*D channels.
        s, g = v["scale_factor"], int(math.isqrt(T))
        x = x.view(g, g // s, s * D).permute(1, 0, 2).reshape(g // s, g // s, s * s * D).permute(1, 0, 2)
        x = x.reshape((g // s) ** 2, s * s * D)
        x = x @ self.w[VLM + "connector.modality_projection.proj.weight"].T
        return x * torch.tensor(v["text_hidden"] ** 0.5, dtype=torch.float32)

    # --- language model layers ---
    def layer_qkv(self, L, h, kv_in=None):
        kv_in = h if kv_in is None else kv_in
        hd = self.cfg.vlm["head_dim"]
        q = self.lin(L + "self_attn.q_proj", h).view(h.shape[0], -1, hd)
        k = self.lin(L + "self_attn.k_proj", kv_in).view(kv_in.shape[0], -1, hd)
        v = self.lin(L + "self_attn.v_proj", kv_in).view(kv_in.shape[0], -1, hd)
        return q, k, v

    def mlp(self, L, x, eps):
        h = rms(x, self.w[L + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(self.lin(L + "mlp.gate_proj", h)) * self.lin(L + "mlp.up_proj", h)
        return x + self.lin(L + "mlp.down_proj", g)

    def prefix_pass(self, prefix, n_block0, valid):
        """The VLM's layers over the prefix; block 0 (images + language) is
        bidirectional, the rest (the state) sees everything, and tokens not
        `valid` (padding) are seen by none, as LeRobot's cumsum rule and pad
        mask make it. Returns the keys (after RoPE) and values of every layer,
        and each layer's output."""
        c, eps = self.cfg, self.cfg.vlm["rms_norm_eps"]
        T = prefix.shape[0]
        block = torch.cumsum(torch.tensor([0] * n_block0 + [1] * (T - n_block0)), 0)
        allowed = (block[None, :] <= block[:, None]) & valid[None, :] & valid[:, None]
        pos = torch.cumsum(valid.to(torch.long), 0) - 1
        x, cache, hidden = prefix, [], []
        for l in range(c.num_vlm_layers):
            L = VLM + f"text_model.layers.{l}."
            h = rms(x, self.w[L + "input_layernorm.weight"], eps)
            q, k, v = self.layer_qkv(L, h)
            q, k = rope(q, pos), rope(k, pos)
            cache.append((k, v))
            x = x + self.lin(L + "self_attn.o_proj", attend(q, k, v, allowed))
            x = self.mlp(L, x, eps)
            hidden.append(x)
        return cache, hidden

    def velocity(self, x_t, t, cache, valid):
        c, eps = self.cfg, self.cfg.vlm["rms_norm_eps"]
        P, N = cache[0][0].shape[0], c.chunk
        n_valid = int(valid.sum())
        a = self.lin(PREFIX + "action_in_proj", x_t)
        half = c.expert_width // 2
        frac = torch.linspace(0.0, 1.0, half, dtype=torch.float64)
        period = c.min_period * (c.max_period / c.min_period) ** frac
        arg = (1.0 / period * 2 * math.pi) * t.to(torch.float64)
        temb = torch.cat([arg.sin(), arg.cos()]).to(torch.float32)[None].expand(N, -1)
        h = self.lin(PREFIX + "action_time_mlp_in", torch.cat([a, temb], dim=1))
        h = self.lin(PREFIX + "action_time_mlp_out", torch.nn.functional.silu(h))
        causal = torch.ones(N, N, dtype=torch.bool).tril()
        for l in range(c.num_expert_layers):
            L = EXPERT + f"layers.{l}."
            kv_prefix, v_prefix = cache[l]
            hn = rms(h, self.w[L + "input_layernorm.weight"], eps)
            if c.self_attn_every > 0 and l % c.self_attn_every == 0:
                q, k, v = self.layer_qkv(L, hn)
                pos = torch.arange(n_valid, n_valid + N)
                q, k = rope(q, pos), rope(k, pos)
                keys, vals = torch.cat([kv_prefix, k]), torch.cat([v_prefix, v])
                allowed = torch.cat([valid[None, :].expand(N, P), causal], dim=1)
            else:
                q = self.lin(L + "self_attn.q_proj", hn).view(N, -1, self.cfg.vlm["head_dim"])
                q = rope(q, torch.arange(N))
                hd = self.cfg.vlm["head_dim"]
                keys = self.lin(L + "self_attn.k_proj", kv_prefix.reshape(P, -1)).view(P, -1, hd)
                vals = self.lin(L + "self_attn.v_proj", v_prefix.reshape(P, -1)).view(P, -1, hd)
                allowed = valid[None, :].expand(N, P)
            h = h + self.lin(L + "self_attn.o_proj", attend(q, keys, vals, allowed))
            h = self.mlp(L, h, eps)
        out = rms(h, self.w[EXPERT + "norm.weight"], eps)
        return self.lin(PREFIX + "action_out_proj", out)

    def forward(self, images, token_ids, state, noise, pad_to=None, pad_id=2):
        """images: list of [H, W, 3] uint8 arrays (config camera order); token_ids:
        the valid language ids; state: state_dim floats (raw); noise: [chunk,
        max_action_dim]. With pad_to, the language is padded to that length with
        pad_id and masked, as LeRobot's pad_language_to="max_length" does (the
        runtime drops the padding instead). Returns (actions [chunk,
        action_dim], stages dict)."""
        c = self.cfg
        stages = {}
        width, height = c.resize
        parts = []
        for k, img in enumerate(images):
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
            x = resize_with_pad(x, width, height) * 2.0 - 1.0
            stages[f"images.{k}.pixels"] = x
            parts.append(self.vision(x))
        stages["projector.out"] = torch.cat(parts)
        D = c.vlm["text_hidden"]
        n_pad = max(0, (pad_to or 0) - len(token_ids))
        ids = list(token_ids) + [pad_id] * n_pad
        emb = self.w[VLM + "text_model.embed_tokens.weight"][torch.tensor(ids, dtype=torch.long)]
        parts.append(emb * math.sqrt(D))
        s = torch.tensor(state, dtype=torch.float32)
        if "observation.state" in self.stats:
            mean, std = self.stats["observation.state"]
            s = (s - mean) / (std + 1e-8)
        s = torch.nn.functional.pad(s, (0, c.max_state_dim - s.shape[0]))
        parts.append(self.lin(PREFIX + "state_proj", s)[None])
        prefix = torch.cat(parts)
        valid = torch.ones(prefix.shape[0], dtype=torch.bool)
        valid[prefix.shape[0] - 1 - n_pad:prefix.shape[0] - 1] = False
        stages["prefix"] = prefix
        cache, hidden = self.prefix_pass(prefix, prefix.shape[0] - 1, valid)
        for l, h in enumerate(hidden):
            stages[f"llm.output.{l}"] = h
        x = torch.as_tensor(noise, dtype=torch.float32).clone()
        dt = -1.0 / c.num_steps
        for step in range(c.num_steps):
            t = torch.tensor(1.0 + step * dt, dtype=torch.float32)  # in double, then float32, as LeRobot's loop
            v = self.velocity(x, t, cache, valid)
            stages[f"flow.velocity.{step}"] = v
            x = x + dt * v
        a = x[:, :c.action_dim]
        if "action" in self.stats:
            mean, std = self.stats["action"]
            a = a * std + mean
        stages["actions"] = a
        return a, stages


def read_stats(model_dir):
    """Mean and std per feature from LeRobot's processor files (newer layout) or
    the normalisation buffers inside model.safetensors (older layout)."""
    out = {}
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        path = os.path.join(model_dir, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            steps = json.load(f)["steps"]
        for step in steps:
            if "state_file" not in step:
                continue
            t = safetensors_io.read(os.path.join(model_dir, step["state_file"]))[0]
            for key in t:
                feat, stat = key.rsplit(".", 1)
                if stat == "mean":
                    out[feat] = (torch.from_numpy(np.asarray(t[key], np.float32)),
                                 torch.from_numpy(np.asarray(t[feat + ".std"], np.float32)))
    if not out:
        t = safetensors_io.read(os.path.join(model_dir, "model.safetensors"))[0]
        for key, feat in (("normalize_inputs.buffer_observation_state", "observation.state"),
                          ("unnormalize_outputs.buffer_action", "action")):
            if key + ".mean" in t:
                out[feat] = (torch.from_numpy(np.asarray(t[key + ".mean"], np.float32)),
                             torch.from_numpy(np.asarray(t[key + ".std"], np.float32)))
    return out
