"""Acceleration plans applied by the PyTorch reference.

The runtime's plan file (docs/format.md, "Plans") applied to the reference
model, written from the format and the method, so that every plan part has
an answer computed outside the C++ code:

- LM sub-layer and block drops, and MLP channel compaction;
- visual-token selection after a layer (EfficientVLA's relevance + diversity
  rule, FastV, random), later layers keeping the tokens' original positions;
- action-head caching: a fixed interval from a start step, a block subset,
  and the adaptive (input-change) refresh;
- per-module and per-layer arithmetic: BF16 products (inputs and weights
  rounded to bfloat16, sums in fp32) and int8 LM layers (one scale per output
  row), in the three forms the runtime has: weight-only, and integer products
  on activations quantized per row to 7 or 8 bits with a zero point.

Only fp32-stored models (the fixtures) are planned here.
"""
import copy
import json
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import encode_images, postprocess, project, rope_cos_sin, sample_actions

# The runtime's int8 products, by the CPU they run on (kernels::prefer_int8_*).
INT8_MODES = ("weight_only", "act7", "act8")


# --------------------------------------------------------------------------- the plan file

def parse(text, num_layers):
    """Plan JSON -> dict with one entry per LM layer and the defaults filled in.

    Checks what the reference needs; the runtime's own checks are richer."""
    j = json.loads(text)
    assert j.get("evla_plan") == 1, "not a version-1 plan"
    layers = [{"attn": True, "mlp": True, "channels": None, "weights": "stored"} for _ in range(num_layers)]
    llm = j.get("llm", {})
    if llm:
        assert llm["num_layers"] == num_layers, "plan for another number of layers"
    for i in llm.get("drop_blocks", []):
        layers[i]["attn"] = layers[i]["mlp"] = False
    for i in llm.get("drop_attention", []):
        layers[i]["attn"] = False
    for i in llm.get("drop_mlp", []):
        layers[i]["mlp"] = False
    for key, kind in (("fp32_layers", "fp32"), ("bf16_layers", "bf16"), ("int8_layers", "int8")):
        for i in llm.get(key, []):
            layers[i]["weights"] = kind
    for i, ch in llm.get("mlp_channels", {}).items():
        layers[int(i)]["channels"] = list(ch)
    precision = {k: "stored" for k in ("vision", "projector", "llm", "action_head")}
    precision.update(j.get("precision", {}))
    for lp in layers:
        if lp["weights"] == "stored":
            lp["weights"] = precision["llm"]
    tokens = None
    if "tokens" in j:
        t = j["tokens"]
        tokens = {"keep": t["keep"], "key": t.get("key", 4), "alpha": t.get("alpha", 0.5),
                  "after_layer": t.get("after_layer", 2), "method": t.get("method", "efficientvla"),
                  "queries": t.get("queries", "text"), "seed": t.get("seed", 0), "merge": t.get("merge", False)}
    c = j.get("cache", {})
    cache = {"interval": c.get("interval", 1), "start": c.get("start", 0), "blocks": c.get("blocks", []),
             "threshold": c.get("threshold", 0.0)}
    return {"name": j.get("name", "unnamed"), "layers": layers, "tokens": tokens, "cache": cache,
            "precision": precision}


# --------------------------------------------------------------------------- arithmetic

def bf16(t):
    """Rounds fp32 values to bfloat16 (nearest, ties to even) and back."""
    return t.to(torch.bfloat16).to(torch.float32)


class Bf16Linear(nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.weight = nn.Parameter(bf16(lin.weight.detach()), requires_grad=False)
        self.bias = lin.bias

    def forward(self, x):
        return F.linear(bf16(x), self.weight, self.bias)


class Bf16Conv(nn.Module):
    """The ViT's patch embedding: a matrix product over patches, as the runtime runs it."""

    def __init__(self, conv):
        super().__init__()
        self.weight = nn.Parameter(bf16(conv.weight.detach()), requires_grad=False)
        self.bias, self.stride = conv.bias, conv.stride

    def forward(self, x):
        return F.conv2d(bf16(x), self.weight, self.bias, stride=self.stride)


def quantize_rows(w):
    """Symmetric int8, one scale per output row: s = max|w| / 127 (1 for a zero row),
    codes = clamp(round(w / s), ±127) — kernels::quantize_int8_rows."""
    w = w.detach().to(torch.float32)
    mx = w.abs().amax(dim=1)
    s = torch.where(mx > 0, mx / 127.0, torch.ones_like(mx))
    q = torch.clamp(torch.round(w / s[:, None]), -127, 127)
    return q, s


def quantize_activations(x, levels):
    """Per row: lo = min(x, 0), hi = max(x, 0), s = (hi − lo) / levels, zero point
    z = round(−lo / s), codes = clamp(round(x · (1/s)) + z, 0, levels); in fp32."""
    lo = torch.clamp(x.amin(dim=1), max=0.0)
    hi = torch.clamp(x.amax(dim=1), min=0.0)
    L = torch.tensor(float(levels), dtype=torch.float32)
    s = (hi - lo) / L
    s = torch.where(torch.isinf(s), hi / L - lo / L, s)
    zero_row = ~(s > 0)
    s = torch.where(zero_row, torch.ones_like(s), s)
    z = torch.clamp(torch.round(-lo / s), 0, levels)
    z = torch.where(zero_row, torch.zeros_like(z), z)
    inv = torch.tensor(1.0, dtype=torch.float32) / s
    codes = torch.clamp(torch.round(x * inv[:, None]) + z[:, None], 0, levels)
    return codes, s, z


class Int8Linear(nn.Module):
    def __init__(self, lin, mode):
        super().__init__()
        assert mode in INT8_MODES, mode
        assert lin.bias is None, "the LM's projections have no bias"
        self.mode = mode
        self.codes, self.scale = quantize_rows(lin.weight)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).to(torch.float32)
        if self.mode == "weight_only":
            y = x2 @ (self.scale[:, None] * self.codes).t()
        else:
            codes, s, z = quantize_activations(x2, 127 if self.mode == "act7" else 255)
            # Σ_k q·w − z · Σ_k w, exact in float64 (integers far below 2^53), then fp32.
            acc = codes.double() @ self.codes.double().t() - z.double()[:, None] * self.codes.double().sum(1)[None]
            y = acc.to(torch.float32) * (s[:, None] * self.scale[None])
        return y.reshape(*shape[:-1], -1)


def set_arithmetic(module, kind, int8_mode=None):
    """Replaces the matrix products inside `module` (in place) for `kind`."""
    if kind in ("stored", "fp32"):
        return
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Bf16Linear(child) if kind == "bf16" else Int8Linear(child, int8_mode))
        elif isinstance(child, nn.Conv2d) and kind == "bf16":
            setattr(module, name, Bf16Conv(child))
        else:
            set_arithmetic(child, kind, int8_mode)


# --------------------------------------------------------------------------- the planned model

class Planned:
    """A copy of the reference model with the plan's weights applied (compacted MLPs,
    BF16/int8 products) and the plan's schedule."""

    def __init__(self, model, plan, int8_mode="weight_only"):
        assert model_dtype_is_f32(model), "the reference plans fp32 models only"
        self.model = copy.deepcopy(model)
        self.plan = plan
        m = self.model
        for layer, lp in zip(m.llm.model.layers, plan["layers"]):
            if lp["channels"] is not None and lp["mlp"] and layer.has_mlp:
                compact_mlp(layer.mlp, lp["channels"])
            set_arithmetic(layer, lp["weights"], int8_mode)
        pr = plan["precision"]
        for enc in m.encoders:
            set_arithmetic(enc, pr["vision"])
        set_arithmetic(m.projector, pr["projector"])
        set_arithmetic(m.dit, pr["action_head"])


def model_dtype_is_f32(model):
    return model.projector[0].weight.dtype == torch.float32


def compact_mlp(mlp, channels):
    """Keeps the listed intermediate channels: rows of gate/up, columns of down."""
    idx = torch.as_tensor(channels, dtype=torch.long)
    for name in ("gate_proj", "up_proj"):
        old = getattr(mlp, name)
        new = nn.Linear(old.in_features, len(channels), bias=False)
        new.weight.data = old.weight.data[idx].clone()
        setattr(mlp, name, new)
    old = mlp.down_proj
    new = nn.Linear(len(channels), old.out_features, bias=False)
    new.weight.data = old.weight.data[:, idx].clone()
    mlp.down_proj = new


# --------------------------------------------------------------------------- token selection

def text_to_visual_attention(q, k, scale, visual_begin, visual_count, queries):
    """relevance[j]: Σ over the query rows (and heads) of the head-averaged causal softmax
    attention to visual key visual_begin + j. q [Hq,T,hd], k [Hkv,T,hd], already rotated.
    Query rows: every row after the visual tokens (text), or the last one (cognition).
    Scores and softmax in float64; each (row, head) term rounded to float32 and summed in
    float32, row by row and head by head, as the runtime sums them (near-equal scores
    then rank the same way on both sides)."""
    Hq, T, _ = q.shape
    k = k.repeat_interleave(Hq // k.shape[0], dim=0).double().numpy()
    q = q.double().numpy()
    visual_end = visual_begin + visual_count
    first = max(T - 1, visual_end) if queries == "cognition" else visual_end
    rel = np.zeros(visual_count, np.float32)
    for i in range(first, T):
        for h in range(Hq):
            s = (k[h, :i + 1] @ q[h, i]) * float(scale)
            e = np.exp(s - s.max())
            rel += (e[visual_begin:visual_end] / e.sum() / Hq).astype(np.float32)
    return rel


def by_score(score):
    """Indices by descending score; ties keep the lower index first."""
    return sorted(range(len(score)), key=lambda i: -float(score[i]))


class SplitMix64:
    """core/rng.h's generator (the random baseline's draws)."""

    def __init__(self, seed):
        self.state = seed & (2 ** 64 - 1)

    def next_u64(self):
        m = 2 ** 64 - 1
        self.state = (self.state + 0x9E3779B97F4A7C15) & m
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)


def cosine(a, b):
    """a·b / (sqrt(|a|²·|b|²) + 1e-12), in float64, as the runtime computes it."""
    return float(a @ b) / (math.sqrt(float(a @ a) * float(b @ b)) + 1e-12)


def select_visual_tokens(t, relevance, features):
    """Ascending indices of the visual tokens kept. features [n, D]: the hidden states
    after the scoring layer, which the diversity term compares."""
    n = len(relevance)
    K = min(t["keep"], n)
    if t["method"] == "random":
        idx, rng = list(range(n)), SplitMix64(t["seed"])
        for i in range(K):
            j = i + rng.next_u64() % (n - i)
            idx[i], idx[j] = idx[j], idx[i]
        return sorted(idx[:K])
    order = by_score(relevance)
    if t["method"] == "fastv":
        return sorted(order[:K])
    # EfficientVLA: the K_key most relevant, then α of the remaining budget to the
    # next most relevant, then the rest to the tokens least similar to the key set.
    n_key = min(t["key"], K)
    n_aug = K - n_key
    a = np.float32(t["alpha"]) * np.float32(n_aug)  # the runtime's float product
    n_rel = int(math.floor(float(a) + 0.5))  # lround, a ≥ 0
    kept = order[:n_key + n_rel]
    rest = order[n_key + n_rel:]
    f = features.double()
    div = []
    for r in rest:
        best = -1.0
        for kk in order[:n_key]:
            best = max(best, cosine(f[r], f[kk]))
        div.append(np.float32(1.0 - best))
    kept += [rest[i] for i in by_score(div)[:K - n_key - n_rel]]
    return sorted(kept)


def merge_dropped_tokens(keep, features):
    """Token merging: each visual token not kept joins the kept token most similar to it
    (cosine, float64; ties to the lower index), and each kept token becomes the mean of
    itself and what joined it. features [n, D] -> new [n, D] (dropped rows unchanged)."""
    f = features.double()
    groups = {k: [k] for k in keep}
    for j in range(f.shape[0]):
        if j in groups:
            continue
        cos = [cosine(f[j], f[k]) for k in keep]
        best = max(range(len(keep)), key=lambda i: (cos[i], -i))  # ties: the first
        groups[keep[best]].append(j)
    out = features.clone()
    for k, members in groups.items():
        out[k] = sum((f[m] for m in members[1:]), f[k].clone()).div(len(members)).to(features.dtype)
    return out


# --------------------------------------------------------------------------- planned stages

def planned_cognition(pm, ids, vis, record):
    """The LM on [BOS, visual, text] under the plan; the final-norm cognition feature."""
    llm, plan = pm.model.llm, pm.plan
    c = llm.cfg
    emb = llm.model.embed_tokens(torch.as_tensor(np.asarray(ids, np.int64)))
    x = torch.cat([emb[:1], vis, emb[1:]], dim=0)[None]
    positions = list(range(x.shape[1]))
    visual_begin, visual_count = 1, vis.shape[0]
    t = plan["tokens"]
    select_at = t["after_layer"] - 1 if t else -1
    # The runtime's attention scale: 1/sqrt(hd) in fp32.
    head_dim = c["hidden_size"] // c["num_attention_heads"]
    scale = np.float32(1.0) / np.sqrt(np.float32(head_dim))
    for l, (layer, lp) in enumerate(zip(llm.model.layers, plan["layers"])):
        record[f"llm.hidden.{l}"] = x[0]
        relevance = None
        if lp["attn"] and layer.has_attn:
            cos, sin = rope_cos_sin(positions, head_dim, c.get("rope_theta", 10000.0), x.dtype)
            qk = []
            out = layer.self_attn(layer.input_layernorm(x), cos, sin, qk)
            if l == select_at:
                relevance = text_to_visual_attention(qk[0][0], qk[1][0], scale, visual_begin, visual_count,
                                                     t["queries"])
            x = x + out
        if lp["mlp"] and layer.has_mlp:
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        if l == select_at and visual_count > t["keep"]:
            keep = select_visual_tokens(t, relevance, x[0, visual_begin:visual_begin + visual_count])
            if t["merge"]:
                merged = merge_dropped_tokens(keep, x[0, visual_begin:visual_begin + visual_count])
                x = torch.cat([x[:, :visual_begin], merged[None], x[:, visual_begin + visual_count:]], dim=1)
            rows = list(range(visual_begin)) + [visual_begin + j for j in keep] + \
                list(range(visual_begin + visual_count, x.shape[1]))
            x = x[:, rows]
            positions = [positions[r] for r in rows]
            visual_count = len(keep)
            record["llm.kept_tokens"] = torch.as_tensor(keep, dtype=torch.float32)
    record[f"llm.hidden.{len(llm.model.layers)}"] = x[0]
    cog = llm.model.norm(x)[0, -1]
    record["llm.cognition"] = cog
    return cog


class CachedDiT:
    """The action head under the plan's cache: a callable for sample_actions, one call
    per sampling step. A reusing block adds its attention and MLP outputs of the last
    refresh instead of computing them."""

    def __init__(self, dit, cache):
        self.dit, self.cache = dit, cache
        self.step = 0
        self.cached = {}
        self.previous_input = None
        self.change, self.since_refresh = 0.0, 0
        self.refreshed = []
        self.reasons = []  # adaptive refreshes: "threshold" (the input changed) or "limit" (interval steps)

    def _schedule_reuse(self, step):
        c = self.cache
        if c["interval"] <= 1 or step <= c["start"]:
            return False
        if c["threshold"] > 0:
            return True  # eligible: the input's change decides
        return (step - c["start"]) % c["interval"] != 0

    def _adaptive(self, eligible, h):
        reuse = False
        if eligible and self.previous_input is not None:
            prev = self.previous_input.double()
            self.change += float((h.double() - prev).abs().sum() / prev.abs().sum()) if prev.abs().sum() > 0 else 0.0
            self.since_refresh += 1
            under = self.change < float(np.float32(self.cache["threshold"]))
            reuse = under and self.since_refresh < self.cache["interval"]
            if not reuse:
                self.reasons.append("limit" if under else "threshold")
        if not reuse:
            self.change, self.since_refresh = 0.0, 0
        self.previous_input = h.clone()
        return reuse

    def _cached_block(self, b):
        blocks = self.cache["blocks"]
        return not blocks or b in blocks

    def __call__(self, x, t, z, state=None):
        d = self.dit
        reuse = self._schedule_reuse(self.step)
        cond = d.t_embedder(t, x.dtype) + d.z_embedder.linear(z)
        if hasattr(d, "s_embedder"):
            cond = cond + d.s_embedder.linear(state)
        h = torch.cat([cond[:, None], d.x_embedder.linear(x)], dim=1)
        h = h + d.positional_embedding.reshape(1, -1, h.shape[-1])
        if self.cache["threshold"] > 0:
            reuse = self._adaptive(reuse, h)
        self.refreshed.append(not reuse)
        for b, blk in enumerate(d.blocks):
            if reuse and self._cached_block(b) and b in self.cached:
                a, m = self.cached[b]
                h = h + a
                h = h + m
                continue
            a = blk.attn(blk.norm1(h))
            h = h + a
            m = blk.mlp(blk.norm2(h))
            h = h + m
            self.cached[b] = (a, m)
        self.step += 1
        return d.final_layer(h)[:, 1:]


@torch.no_grad()
def forward_planned(model, plan, images_uint8_list, ids, state, noise, int8_mode="weight_only", step_noise=None,
                    refresh_reasons=None):
    """forward_all under a plan: every intermediate named as the runtime's trace names it,
    plus `llm.kept_tokens` (the visual tokens kept) and `dit.refreshed` (1 where the
    head recomputed, 0 where it reused). refresh_reasons, a list, receives why each
    adaptive refresh happened ("threshold" or "limit")."""
    pm = Planned(model, plan, int8_mode)
    rec = {}
    feats = encode_images(pm.model, images_uint8_list, rec)
    vis = project(pm.model, feats, rec)
    cog = planned_cognition(pm, ids, vis, rec)
    head = CachedDiT(pm.model.dit, plan["cache"])
    x = sample_actions(pm.model, cog, state, noise, rec, step_noise, dit=head)
    rec["dit.refreshed"] = torch.as_tensor(head.refreshed, dtype=torch.float32)
    if refresh_reasons is not None:
        refresh_reasons.extend(head.reasons)
    norm, act = postprocess(model.config, x.double().numpy())
    res = {k: v.detach().numpy() for k, v in rec.items()}
    res["actions.normalized"] = norm.astype(np.float32)
    res["actions"] = act.astype(np.float32)
    return res
