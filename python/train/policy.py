"""Trainable evla-tabletop policy: the config, a batched forward over evla_ref's
modules (python/evla_ref/model.py, the reference of docs/format.md), the
instruction tokenizer, and export to a model directory the C++ runtime loads.

The modules are evla_ref's own, so the exported tensor names and the forward
pass are exactly the runtime's; only batching (right-padded prompts, several
diffusion samples per backbone forward) is added here.
"""
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evla_ref import model as ref  # noqa: E402
from evla_ref import safetensors_io  # noqa: E402
from evla_ref.tokenizer import TEMPLATE  # noqa: E402


def set_threads(n):
    """torch's threads, and OpenBLAS's: Debian's torch does its matrix products in OpenBLAS,
    whose own pool (one thread per core, spinning between calls) torch.set_num_threads does
    not size. Left alone, a one-thread training run keeps the other core busy too."""
    import ctypes
    torch.set_num_threads(n)
    try:
        ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(n)
    except (OSError, AttributeError):  # another BLAS: torch.set_num_threads is enough
        pass


# --------------------------------------------------------------------------- config

def make_config(vocab_size, space_id, q01, q99, size="default", state_dim=4):
    """The shipped architecture. CogACT's layout (DINOv2-like + SigLIP-like ViTs, features
    of the second-to-last block, 3-layer projector, Llama, DiT head), scaled down."""
    s = dict(vit_d=96, vit_layers=4, vit_heads=4, llm_d=128, llm_layers=12, llm_heads=4, llm_kv=2,
             llm_ffn=352, dit_d=128, dit_layers=3, dit_heads=4)
    if isinstance(size, dict):
        s.update(size)

    def enc(name, prefix, dino):
        return {
            "name": name, "prefix": prefix, "image_size": 64, "patch_size": 8,
            "hidden_size": s["vit_d"], "num_layers": s["vit_layers"], "num_heads": s["vit_heads"],
            "intermediate_size": 4 * s["vit_d"],
            "class_token": dino, "num_registers": 4 if dino else 0, "layer_scale": dino,
            "feature_layer": s["vit_layers"] - 2, "norm_eps": 1e-6,
            "image_mean": [0.485, 0.456, 0.406] if dino else [0.5, 0.5, 0.5],
            "image_std": [0.229, 0.224, 0.225] if dino else [0.5, 0.5, 0.5],
        }

    return {
        "evla_format": 1,
        "architecture": "cogact",
        "name": "evla-tabletop",
        "vision": {"num_images": 1, "encoders": [
            enc("dino", "vision_backbone.dino_featurizer", True),
            enc("siglip", "vision_backbone.siglip_featurizer", False)]},
        "projector": {"prefix": "projector.projector", "hidden_dims": [8 * s["vit_d"], s["llm_d"]]},
        "llm": {
            "prefix": "llm_backbone.llm", "hidden_size": s["llm_d"], "intermediate_size": s["llm_ffn"],
            "num_hidden_layers": s["llm_layers"], "num_attention_heads": s["llm_heads"],
            "num_key_value_heads": s["llm_kv"], "vocab_size": vocab_size, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
        },
        "prompt": {"tokenizer": "tokenizer.model", "template": TEMPLATE, "lowercase_instruction": True,
                   "space_token_id": space_id, "cognition_token_id": 2},
        "action_head": {
            "prefix": "action_model.net", "hidden_size": s["dit_d"], "num_layers": s["dit_layers"],
            "num_heads": s["dit_heads"], "mlp_ratio": 4.0, "action_dim": 4, "chunk_size": 16,
            "cond_dim": s["llm_d"], "state_dim": state_dim, "frequency_embedding_size": 256, "norm_eps": 1e-6,
            "train_steps": 100, "beta_schedule": "squaredcos_cap_v2", "sample_steps": 10, "cfg_scale": 1.5,
            "n_action_steps": 4,
        },
        "action_normalization": {"q01": [float(v) for v in q01], "q99": [float(v) for v in q99],
                                 "mask": [True, True, True, False], "gripper_index": 3},
    }


# --------------------------------------------------------------------------- tokenizer

def train_tokenizer(instructions, vocab_size=160):
    """SentencePiece BPE with Llama conventions (as evla_ref/tokenizer.py): unk 0, BOS 1, EOS 2,
    identity normalisation, dummy prefix, "\\n" user-defined. Trained on the benchmark's
    instructions, bare and inside the prompt template. Returns the model bytes."""
    from evla_ref import tokenizer
    lines = sorted(set(i.lower() for i in instructions))
    corpus = lines + [TEMPLATE.replace("{instruction}", s) for s in lines]
    while True:
        try:
            return tokenizer.train(vocab_size, sentences=corpus)
        except RuntimeError as e:  # "Vocabulary size too high": shrink to what the corpus supports
            if "too high" not in str(e) or vocab_size <= 64:
                raise
            vocab_size -= 8


# --------------------------------------------------------------------------- model

def init_weights(policy, seed, vit_pos="random"):
    """Scratch initialisation: N(0, 0.02) linears/embeddings, zero biases, LayerScale 0.1,
    zero DiT output layer (it predicts eps ~ N(0,1) from the start through its bias-free start)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.1)
            elif name.endswith("bias"):
                p.zero_()
            elif p.dim() >= 2 or "pos" in name or "token" in name or "uncondition" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        # residual output projections scaled down (GPT-2 style)
        nl = policy.config["llm"]["num_hidden_layers"]
        for layer in policy.llm.model.layers:
            layer.self_attn.o_proj.weight.mul_(1 / math.sqrt(2 * nl))
            layer.mlp.down_proj.weight.mul_(1 / math.sqrt(2 * nl))
        # Projector variance-preserving (std 1/sqrt(fan_in)): with 0.02 its three layers shrink the
        # visual tokens ~30x below the text embeddings (and below RMSNorm's eps), and the LM learns
        # to ignore the image (observed: cognition independent of the image after 1200 steps).
        for lin in policy.projector:
            if isinstance(lin, nn.Linear):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(lin.weight.shape[1]))
        policy.dit.final_layer.linear.weight.zero_()
        policy.dit.final_layer.linear.bias.zero_()
        # vit_pos="sincos": ViT positions start as 2-D sin-cos (as MAE's fixed embeddings), still
        # learned, instead of N(0, 0.02) (tried once; no faster in its first 1,400 steps).
        for enc in policy.encoders if vit_pos == "sincos" else []:
            n, d = enc.pos_embed.shape[1], enc.pos_embed.shape[2]
            enc.pos_embed.copy_(0.2 * sincos_2d(int(round(math.sqrt(n))), d).unsqueeze(0))


def sincos_2d(grid, dim):
    """[grid*grid, dim]: the first half of the channels encode the row, the second the column,
    each as sin | cos of position x 10000^(-k/(dim/4)) (row-major patch order)."""
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float64) / max(q, 1)))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        a = pos[:, None] * omega[None, :]
        parts += [torch.sin(a), torch.cos(a)]
    out = torch.cat(parts, dim=1)
    if out.shape[1] < dim:
        out = torch.cat([out, torch.zeros(out.shape[0], dim - out.shape[1], dtype=out.dtype)], dim=1)
    return out.float()


class Trainable(nn.Module):
    """evla_ref.Policy plus state normalisation (baked into s_embedder at export)."""

    def __init__(self, cfg, state_mean, state_std, aux_dim=0, ground=False, patch_pos=False, mid_aux_layers=()):
        super().__init__()
        self.policy = ref.Policy(cfg, with_lm_head=False)
        # Training-only heads (never exported): the auxiliary position regression, the
        # grounding queries (object, destination) that point from the cognition feature at
        # the visual token showing each, and the read-out of an object's position from the
        # visual token showing it.
        d = cfg["llm"]["hidden_size"]
        self.aux_head = nn.Linear(d, aux_dim) if aux_dim else None
        self.ground_q = nn.Linear(d, 2 * d) if ground else None
        self.ground_k = nn.Linear(d, d) if ground else None
        self.patch_pos = nn.Linear(d, 3) if patch_pos else None
        self.mid_aux = nn.ModuleDict({str(l): nn.Linear(d, aux_dim) for l in mid_aux_layers}) if aux_dim else None
        self.register_buffer("state_mean", torch.as_tensor(state_mean, dtype=torch.float32))
        self.register_buffer("state_std", torch.as_tensor(state_std, dtype=torch.float32))
        for i, e in enumerate(cfg["vision"]["encoders"]):
            self.register_buffer(f"pix_mean{i}", torch.tensor(e["image_mean"]).view(1, 3, 1, 1))
            self.register_buffer(f"pix_std{i}", torch.tensor(e["image_std"]).view(1, 3, 1, 1))
        acp = ref.squaredcos_alphas_cumprod(cfg["action_head"]["train_steps"])
        self.register_buffer("sqrt_acp", torch.tensor(np.sqrt(acp), dtype=torch.float32))
        self.register_buffer("sqrt_1macp", torch.tensor(np.sqrt(1 - acp), dtype=torch.float32))

    def cognition(self, images01, text_ids, text_len, with_visual=False, with_hidden=False):
        """images01 [B,3,S,S] in [0,1]; text_ids [B,T] prompt ids after BOS (right-padded);
        text_len [B] -> cognition features [B,d] (final-norm hidden at each sample's last token),
        and with with_visual also the visual tokens' final-norm hiddens [B,Nv,d]; with_hidden
        appends (each LM layer's input, the cognition token's index)."""
        p = self.policy
        feats = []
        for i, enc in enumerate(p.encoders):
            x = (images01 - getattr(self, f"pix_mean{i}")) / getattr(self, f"pix_std{i}")
            feats.append(enc(x))
        vis = p.projector(torch.cat(feats, dim=-1))
        emb = p.llm.model.embed_tokens
        b = images01.shape[0]
        bos = emb(torch.full((b, 1), p.config["llm"]["bos_token_id"], dtype=torch.long))
        seq = torch.cat([bos, vis, emb(text_ids)], dim=1)
        # Right padding: causal attention keeps the real tokens blind to the pads.
        hidden, normed = p.llm.run(seq)
        last = 1 + vis.shape[1] + text_len - 1
        cog = normed[torch.arange(b), last]
        out = (cog, normed[:, 1:1 + vis.shape[1]]) if with_visual else (cog,)
        if with_hidden:
            out = out + ((hidden, last),)
        return out if len(out) > 1 else cog

    def cognition_attention_logits(self, hidden, last, layer):
        """[B, heads, L] masked attention logits of the cognition token (row `last` of each
        sample) at LM layer `layer`, recomputed from that layer's input exactly as the LM's
        attention computes them (RoPE, GQA); positions past `last` are -inf."""
        return self.cognition_attention(hidden[layer], last, self.policy.llm.model.layers[layer])[0]

    def cognition_attention(self, x, last, layer):
        """LM layer module `layer`'s attention row of the cognition token, from the layer's input
        x [B,L,d]: the masked logits [B,heads,L] and every position's value [B,L,heads,hd]
        (RoPE, GQA kv heads repeated)."""
        llm = self.policy.llm
        b, n, _ = x.shape
        rows = torch.arange(b)
        cos, sin = rope_tables(n, llm.cfg, x.dtype)
        att = layer.self_attn
        h = layer.input_layernorm(x)
        q = att.q_proj(h[rows, last]).view(b, att.nh, att.hd)
        q = q * cos[last][:, None] + ref.rotate_half(q) * sin[last][:, None]
        k = att.k_proj(h).view(b, n, att.nkv, att.hd)
        k = k * cos[None, :, None] + ref.rotate_half(k) * sin[None, :, None]
        rep = att.nh // att.nkv
        k = k.repeat_interleave(rep, dim=2)
        v = att.v_proj(h).view(b, n, att.nkv, att.hd).repeat_interleave(rep, dim=2)
        logits = torch.einsum("bhd,bnhd->bhn", q, k) / math.sqrt(att.hd)
        valid = torch.arange(n)[None, :] <= last[:, None]  # causal row of the cognition token
        return logits.masked_fill(~valid[:, None], float("-inf")), v

    def cognition_from_layer(self, x, last, layers, norm):
        """The cognition feature [B,d] from the input x [B,L,d] of the LM's top layers `layers`
        (right-padded; `last` = each sample's cognition index) and the final `norm`: the policy's
        own modules or copies of them (an EMA). The layers before the last run on every token,
        the last only on the cognition token's row, since nothing else of its output is read.
        Equals cognition() (tests/train/train_smoke.sh); finetune_head.py checks its cache
        against the runtime's feature before training."""
        cos, sin = rope_tables(x.shape[1], self.policy.llm.cfg, x.dtype)
        for layer in layers[:-1]:
            x = layer(x, cos, sin)
        top = layers[-1]
        b = x.shape[0]
        r = x[torch.arange(b), last]
        if top.has_attn:
            logits, v = self.cognition_attention(x, last, top)
            att = logits.softmax(-1)
            r = r + top.self_attn.o_proj(torch.einsum("bhn,bnhd->bhd", att, v).reshape(b, -1))
        if top.has_mlp:
            r = r + top.mlp(top.post_attention_layernorm(r))
        return norm(r)

    def attention_loss(self, hidden, last, obj_patch, dest_patch, layers):
        """Supervises the LM's own retrieval: at each layer in `layers`, query head 0 of the
        cognition token must put its attention on the visual token showing the task's object
        and head 1 on the one showing its destination (cross-entropy of the attention row;
        head 2 and every other layer stay free). The action head sees only the cognition
        feature, so the object's position has to be read into it by attention; the grounding
        heads showed the feature knows *what* to look for but not *where* it is."""
        rows = torch.arange(last.shape[0])
        total = 0.0
        for li in layers:
            logp = self.cognition_attention_logits(hidden, last, li).log_softmax(-1)
            total = total - 0.5 * (logp[rows, 0, 1 + obj_patch].mean() + logp[rows, 1, 1 + dest_patch].mean())
        return total / len(layers)

    def ground_loss(self, cog, visual, obj_patch, dest_patch):
        """Cross-entropy of pointing at the visual token (patch) that shows the task's object and
        the one showing its destination, by scaled dot product between a query from the cognition
        feature and a key from each visual token: it asks the backbone to ground the named object
        in the image, which the position regression alone taught slowly."""
        d = cog.shape[1]
        q = self.ground_q(cog).view(-1, 2, d)
        k = self.ground_k(visual)
        logits = torch.einsum("bqd,bnd->bqn", q, k) / math.sqrt(d)
        return 0.5 * (F.cross_entropy(logits[:, 0], obj_patch) + F.cross_entropy(logits[:, 1], dest_patch))

    def patch_position_loss(self, hidden, layer, patches, xyz, present):
        """MSE of reading an object's exact position from the visual token that shows it, at the
        input of LM layer `layer`, over the objects of each frame (patches [B,K], xyz [B,K,3],
        present [B,K]): what the supervised attention fetches must carry where the object is,
        to a fraction of a patch (a patch spans ~10 cm of table; a grasp needs ~3 cm)."""
        vis = hidden[layer][:, 1:]
        tok = vis[torch.arange(patches.shape[0])[:, None], patches]  # [B,K,d]
        err = ((self.patch_pos(tok) - xyz) ** 2).sum(-1) / 3
        return (err * present).sum() / present.sum().clamp(min=1) / 0.04  # table units / 0.2, as aux_loss

    def aux_loss(self, cog, state, target):
        """MSE of the aux head's prediction of [object xyz, destination xyz, object - gripper xyz]
        (table units / 0.2, so each is O(1)) from the cognition feature alone."""
        want = torch.cat([target, target[:, :3] - state[:, :3]], dim=1) / 0.2
        return ((self.aux_head(cog) - want) ** 2).mean()

    def mid_aux_loss(self, hidden, last, state, target):
        """The aux regression again, from the cognition token's residual (RMS-normalised) at the
        input of each layer in mid_aux_layers: a short gradient path that teaches the supervised
        attention's value and output projections to carry the fetched token's position into the
        cognition token, instead of only through every later layer."""
        want = torch.cat([target, target[:, :3] - state[:, :3]], dim=1) / 0.2
        rows = torch.arange(last.shape[0])
        total = 0.0
        for l, head in self.mid_aux.items():
            r = hidden[int(l)][rows, last]
            r = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-5)
            total = total + ((head(r) - want) ** 2).mean()
        return total / len(self.mid_aux)

    def diffusion_loss(self, cog, state, actions, repeats, cond_drop, state_drop=0.0, dit=None):
        """CogACT's DiT loss: eps-prediction MSE, `repeats` noise samples per backbone forward,
        condition replaced by the learned uncondition with probability cond_drop; with
        probability state_drop the action head sees the mean state (normalised 0) instead.
        `dit`: another action head to score (e.g. an EMA copy) instead of the policy's own."""
        dit = dit if dit is not None else self.policy.dit
        b = cog.shape[0]
        z = cog.repeat_interleave(repeats, 0)
        st = None
        if hasattr(dit, "s_embedder"):
            st = (state - self.state_mean) / self.state_std
            if state_drop > 0:
                st = st * (torch.rand(b, 1) >= state_drop).float()
            st = st.repeat_interleave(repeats, 0)
        x0 = actions.repeat_interleave(repeats, 0)
        n = x0.shape[0]
        drop = torch.rand(n) < cond_drop
        z = torch.where(drop[:, None], dit.z_embedder.uncondition.expand(n, -1), z)
        t = torch.randint(0, self.sqrt_acp.shape[0], (n,))
        eps = torch.randn_like(x0)
        xt = self.sqrt_acp[t, None, None] * x0 + self.sqrt_1macp[t, None, None] * eps
        pred = dit(xt, t.numpy(), z, st)
        return ((pred - eps) ** 2).mean()


def load_exported(model, model_dir, head_only=True):
    """The action head (or with head_only=False every weight) of an exported model, e.g. an
    earlier fine-tune, into `model`, with the state normalisation that export folds into
    s_embedder taken out again."""
    tensors, _ = safetensors_io.read(os.path.join(model_dir, "model.safetensors"))
    dit = model.policy.dit
    prefix = model.policy.config["action_head"]["prefix"]
    missing = [k for k in dit.state_dict() if f"{prefix}.{k}" not in tensors]
    if missing:
        sys.exit(f"{model_dir}: no {prefix}.{missing[0]} (an action head of another shape?)")
    if head_only:
        tensors = {k: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    try:
        model.policy.load_flat_state_dict(tensors, strict=not head_only)
    except KeyError as e:
        sys.exit(f"{model_dir}: {e.args[0]} (a model of another shape?)")
    if hasattr(dit, "s_embedder"):
        with torch.no_grad():
            lin = dit.s_embedder.linear
            lin.bias.add_(lin.weight @ model.state_mean)
            lin.weight.mul_(model.state_std[None, :])


def rope_tables(n, c, dtype):
    """RoPE cos/sin [n, head_dim] for positions 0..n-1 of the LM `c`."""
    return ref.rope_cos_sin(range(n), c["hidden_size"] // c["num_attention_heads"], c.get("rope_theta", 10000.0),
                            dtype)


def export(trainable, cfg, tok_bytes, out_dir, dtype=np.float32):
    """Writes config.json, model.safetensors, tokenizer.model; state normalisation folded
    into s_embedder so the runtime can feed the raw env state. Written atomically-ish
    (temp files then rename) so a concurrent evla eval never sees a half-written model."""
    os.makedirs(out_dir, exist_ok=True)
    pol = copy.deepcopy(trainable.policy).float().eval()
    if hasattr(pol.dit, "s_embedder"):
        with torch.no_grad():
            lin = pol.dit.s_embedder.linear
            w = lin.weight / trainable.state_std[None, :]
            lin.bias.copy_(lin.bias - w @ trainable.state_mean)
            lin.weight.copy_(w)
    tensors = {k: v.detach().cpu().numpy().astype(dtype) for k, v in pol.flat_state_dict().items()}
    tmp = os.path.join(out_dir, ".tmp")
    os.makedirs(tmp, exist_ok=True)
    safetensors_io.write(os.path.join(tmp, "model.safetensors"), tensors,
                         metadata={"format": "pt", "evla_format": "1"})
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
        f.write(tok_bytes)
    for name in ("tokenizer.model", "model.safetensors", "config.json"):
        os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    os.rmdir(tmp)
