"""Checks of the PyTorch reference (pytest is not installed here: a plain script).

    PYTHONPATH=python /usr/bin/python3 tests/reference/run_reference_checks.py

Exits non-zero if any check fails. Covers the safetensors I/O, the Llama
reference against two real pretrained checkpoints (tinyllamas), the fixture
files against docs/format.md, determinism, fp32-vs-fp64 agreement and the
sampler schedule against improved-diffusion's respacing.
"""
import json
import math
import os
import sys
import tempfile
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

import sentencepiece as spm  # noqa: E402

from evla_ref import safetensors_io as st  # noqa: E402
from evla_ref import make_smolvla_fixture, plans, smolvla  # noqa: E402
from evla_ref.model import (build_prompt_ids, ddim_schedule, forward_all, greedy_generate,  # noqa: E402
                            lm_forward, load_hf_llama, load_model, postprocess)

TINYLLAMAS = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyllamas"))  # as the C++ tests
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MODELS = os.path.join(ROOT, "models")

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def nmse(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sum((a - b) ** 2) / max(np.sum(b ** 2), 1e-30))


# ------------------------------------------------------------------ safetensors

@check
def safetensors_roundtrip():
    rng = np.random.RandomState(0)
    tensors = {
        "f32": rng.randn(3, 5).astype(np.float32), "f16": rng.randn(7).astype(np.float16),
        "f64": rng.randn(2, 2), "i64": np.arange(5, dtype=np.int64), "i32": np.arange(-3, 3, dtype=np.int32),
        "u8": rng.randint(0, 256, (4, 4, 3)).astype(np.uint8), "bool": np.array([True, False, True]),
        "scalar": np.float32(2.5), "empty": np.zeros((0, 4), np.float32),
        "bf16": st.to_bf16(np.array([1.0, -2.0, 1.00390625, 1.01171875, 3.14159], np.float32)),
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "t.safetensors")
        st.write(p, tensors, {"instruction": "pick up the cube", "n": 3}, dtypes={"bf16": "BF16"})
        blob = open(p, "rb").read()
        n = int.from_bytes(blob[:8], "little")
        assert n % 8 == 0, "header not padded to a multiple of 8"
        header = json.loads(blob[8:8 + n])
        assert header["__metadata__"] == {"instruction": "pick up the cube", "n": "3"}
        assert header["bf16"]["dtype"] == "BF16" and header["bool"]["dtype"] == "BOOL"
        for name, info in header.items():
            if name != "__metadata__":
                size = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2}.get(info["dtype"], 1)
                assert info["data_offsets"][0] % size == 0, f"{name} not naturally aligned"
        back, meta = st.read(p)
        assert meta["n"] == "3"
        for k, v in tensors.items():
            if k == "bf16":
                continue
            assert back[k].dtype == np.asarray(v).dtype and back[k].shape == np.asarray(v).shape, k
            assert np.array_equal(back[k], v), k
        # 1+2^-8 is a tie -> even (1.0); 1+3*2^-8 rounds up to 1+2^-6.
        assert back["bf16"].tolist()[:4] == [1.0, -2.0, 1.0, 1.015625], back["bf16"]
        assert abs(back["bf16"][4] - 3.140625) < 1e-7
        assert st.write(p, tensors, {"instruction": "pick up the cube", "n": 3},
                        dtypes={"bf16": "BF16"}) is None and open(p, "rb").read() == blob
        # a corrupted offset is rejected
        bad = blob.replace(b'"data_offsets":[0,', b'"data_offsets":[8,', 1)
        open(p, "wb").write(bad)
        try:
            st.read(p)
        except ValueError:
            pass
        else:
            raise AssertionError("bad offsets accepted")
    # a file written by other software
    t, _ = st.read(os.path.join(TINYLLAMAS, "stories260K", "model.safetensors"))
    assert t["model.embed_tokens.weight"].shape == (512, 64)


@check
def png_roundtrip():
    from evla_ref import images
    img = images.tabletop(40, np.random.RandomState(1))
    with tempfile.TemporaryDirectory() as d:
        images.write_png(os.path.join(d, "a.png"), img)
        assert np.array_equal(images.read_png(os.path.join(d, "a.png")), img)
    ex = images.read_png(os.path.join(MODELS, "evla-tiny-random", "example.png"))
    assert ex.shape == (64, 64, 3)


# ------------------------------------------------------------------ Llama on real weights

@check
def stories260k_greedy():
    llm = load_hf_llama(os.path.join(TINYLLAMAS, "stories260K"))
    ids = greedy_generate(llm, [1], 14)
    want = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317]
    assert ids == want, f"got {ids}"
    out = lm_forward(llm, ids)
    assert len(out["hidden"]) == llm.cfg["num_hidden_layers"] + 1
    assert torch.allclose(out["final"], llm.model.norm(out["hidden"][-1]))


@check
def babyllama_greedy_and_tokenizer():
    d = os.path.join(TINYLLAMAS, "babyllama-tok105")
    ids = greedy_generate(load_hf_llama(d), [1], 12)
    want = [1, 3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5]
    assert ids == want, f"got {ids}"
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    enc = sp.encode("Once upon a time, there was")
    want = [3, 34, 9, 22, 4, 3, 18, 20, 7, 9, 3, 5, 3, 6, 10, 16, 4, 25, 3, 6, 8, 4, 13, 4, 3, 17, 5, 12]
    assert enc == want, f"got {enc}"


@check
def llm_fp64_matches_fp32():
    d = os.path.join(TINYLLAMAS, "stories260K")
    ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]
    a = lm_forward(load_hf_llama(d, torch.float32), ids)["logits"]
    b = lm_forward(load_hf_llama(d, torch.float64), ids)["logits"]
    e = nmse(a, b)
    assert e < 1e-10, e
    print(f"    stories260K logits fp32 vs fp64 NMSE {e:.1e}")


# ------------------------------------------------------------------ sampler

def improved_diffusion_respaced(train_steps, sample_steps):
    """Independent transcription of improved-diffusion's space_timesteps +
    SpacedDiffusion: new betas from alphas_cumprod at the kept steps."""
    ab = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - ab((i + 1) / train_steps) / ab(i / train_steps), 0.999)
                      for i in range(train_steps)])
    acp = np.cumprod(1 - betas)
    for stride in range(1, train_steps):
        if len(range(0, train_steps, stride)) == sample_steps:
            use = list(range(0, train_steps, stride))
            break
    last, new_betas = 1.0, []
    for i, a in enumerate(acp):
        if i in use:
            new_betas.append(1 - a / last)
            last = a
    new_acp = np.cumprod(1 - np.array(new_betas))
    prev = np.append(1.0, new_acp[:-1])
    # sampling runs indices n-1 .. 0 and calls the model with use[i]
    return [(use[i], new_acp[i], prev[i]) for i in reversed(range(len(use)))]


@check
def ddim_schedule_matches_respacing():
    for T, S in ((100, 10), (100, 5), (1000, 50), (100, 8), (100, 7), (1000, 3)):
        ours, ref = ddim_schedule(T, S), improved_diffusion_respaced(T, S)
        assert [t for t, _, _ in ours] == [t for t, _, _ in ref]
        for (_, a, p), (_, ra, rp) in zip(ours, ref):
            assert abs(a - ra) < 1e-12 and abs(p - rp) < 1e-12
    assert [t for t, _, _ in ddim_schedule(100, 10)] == list(range(90, -1, -10))


@check
def postprocess_rules():
    cfg = {"action_head": {"action_dim": 3},
           "action_normalization": {"q01": [-2, 0, 10], "q99": [2, 1, 20], "mask": [True, False, True],
                                    "gripper_index": 1}}
    norm, act = postprocess(cfg, np.array([[1.5, 0.49, -0.5], [-3, 0.5, 0]]))
    assert norm.tolist() == [[1.0, 0.0, -0.5], [-1.0, 1.0, 0.0]], norm
    assert act.tolist() == [[2.0, 0.0, 12.5], [-2.0, 1.0, 15.0]], act
    cfg["action_normalization"]["gripper_index"] = -1
    norm, _ = postprocess(cfg, np.array([[0.2, 0.3, 0.4]]))
    assert norm.tolist() == [[0.2, 0.3, 0.4]]


# ------------------------------------------------------------------ fixtures vs docs/format.md

def expected_tensor_shapes(cfg):
    """Every tensor of a model, written out from the tables of docs/format.md."""
    s = {}
    for e in cfg["vision"]["encoders"]:
        p, d, P, I = e["prefix"], e["hidden_size"], e["patch_size"], e["intermediate_size"]
        n = (e["image_size"] // P) ** 2
        s[f"{p}.patch_embed.proj.weight"] = (d, 3, P, P)
        s[f"{p}.patch_embed.proj.bias"] = (d,)
        s[f"{p}.pos_embed"] = (1, n, d)
        if e.get("class_token"):
            s[f"{p}.cls_token"] = (1, 1, d)
        if e.get("num_registers", 0):
            s[f"{p}.reg_token"] = (1, e["num_registers"], d)
        for i in range(e["num_layers"]):
            b = f"{p}.blocks.{i}"
            for nm in ("norm1", "norm2"):
                s[f"{b}.{nm}.weight"] = s[f"{b}.{nm}.bias"] = (d,)
            s[f"{b}.attn.qkv.weight"], s[f"{b}.attn.qkv.bias"] = (3 * d, d), (3 * d,)
            s[f"{b}.attn.proj.weight"], s[f"{b}.attn.proj.bias"] = (d, d), (d,)
            s[f"{b}.mlp.fc1.weight"], s[f"{b}.mlp.fc1.bias"] = (I, d), (I,)
            s[f"{b}.mlp.fc2.weight"], s[f"{b}.mlp.fc2.bias"] = (d, I), (d,)
            if e.get("layer_scale"):
                s[f"{b}.ls1.gamma"] = s[f"{b}.ls2.gamma"] = (d,)
    L = cfg["llm"]
    dims = [sum(e["hidden_size"] for e in cfg["vision"]["encoders"])] + cfg["projector"]["hidden_dims"] \
        + [L["hidden_size"]]
    for i in range(len(dims) - 1):
        s[f"{cfg['projector']['prefix']}.{2 * i}.weight"] = (dims[i + 1], dims[i])
        s[f"{cfg['projector']['prefix']}.{2 * i}.bias"] = (dims[i + 1],)
    p, d, hd = L["prefix"], L["hidden_size"], L["hidden_size"] // L["num_attention_heads"]
    kv = L["num_key_value_heads"] * hd
    s[f"{p}.model.embed_tokens.weight"] = (L["vocab_size"], d)
    s[f"{p}.model.norm.weight"] = (d,)
    s[f"{p}.lm_head.weight"] = (L["vocab_size"], d)
    specs = L.get("layers") or [{}] * L["num_hidden_layers"]  # pruned checkpoints list each layer
    for i in range(L["num_hidden_layers"]):
        b, spec = f"{p}.model.layers.{i}", specs[i]
        if spec.get("attention", True):
            s[f"{b}.self_attn.q_proj.weight"] = s[f"{b}.self_attn.o_proj.weight"] = (d, d)
            s[f"{b}.self_attn.k_proj.weight"] = s[f"{b}.self_attn.v_proj.weight"] = (kv, d)
            s[f"{b}.input_layernorm.weight"] = (d,)
        if spec.get("mlp", True):
            ffn = spec.get("intermediate_size", L["intermediate_size"])
            s[f"{b}.mlp.gate_proj.weight"] = s[f"{b}.mlp.up_proj.weight"] = (ffn, d)
            s[f"{b}.mlp.down_proj.weight"] = (d, ffn)
            s[f"{b}.post_attention_layernorm.weight"] = (d,)
    a = cfg["action_head"]
    p, H, A, C, F = a["prefix"], a["hidden_size"], a["action_dim"], a["chunk_size"], a["frequency_embedding_size"]
    M = int(H * a["mlp_ratio"])
    s.update({f"{p}.x_embedder.linear.weight": (H, A), f"{p}.x_embedder.linear.bias": (H,),
              f"{p}.t_embedder.mlp.0.weight": (H, F), f"{p}.t_embedder.mlp.0.bias": (H,),
              f"{p}.t_embedder.mlp.2.weight": (H, H), f"{p}.t_embedder.mlp.2.bias": (H,),
              f"{p}.z_embedder.linear.weight": (H, a["cond_dim"]), f"{p}.z_embedder.linear.bias": (H,),
              f"{p}.z_embedder.uncondition": (1, a["cond_dim"]),
              f"{p}.positional_embedding": (C + 1, H),
              f"{p}.final_layer.linear.weight": (A, H), f"{p}.final_layer.linear.bias": (A,)})
    if a.get("state_dim", 0) > 0:
        s[f"{p}.s_embedder.linear.weight"] = (H, a["state_dim"])
        s[f"{p}.s_embedder.linear.bias"] = (H,)
    for i in range(a["num_layers"]):
        b = f"{p}.blocks.{i}"
        s[f"{b}.attn.qkv.weight"], s[f"{b}.attn.qkv.bias"] = (3 * H, H), (3 * H,)
        s[f"{b}.attn.proj.weight"], s[f"{b}.attn.proj.bias"] = (H, H), (H,)
        s[f"{b}.mlp.fc1.weight"], s[f"{b}.mlp.fc1.bias"] = (M, H), (M,)
        s[f"{b}.mlp.fc2.weight"], s[f"{b}.mlp.fc2.bias"] = (H, M), (H,)
    return s


def expected_output_shapes(cfg):
    """The fixture table of docs/format.md."""
    v, a, L = cfg["vision"], cfg["action_head"], cfg["llm"]
    e0 = v["encoders"][0]
    n = v.get("num_images", 1) * (e0["image_size"] // e0["patch_size"]) ** 2
    s = {f"vision.{i}.features": (n, e["hidden_size"]) for i, e in enumerate(v["encoders"])}
    s["projector.out"] = (n, L["hidden_size"])
    s["llm.cognition"] = (L["hidden_size"],)
    for i in range(a["sample_steps"]):
        s[f"dit.eps.{i}"] = s[f"dit.x.{i}"] = (a["chunk_size"], a["action_dim"])
    s["actions.normalized"] = s["actions"] = (a["chunk_size"], a["action_dim"])
    return s


def is_smolvla(d):
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f).get("type") == "smolvla"


def fixture_dirs():
    """The CogACT-family fixtures (SmolVLA's has its own checks)."""
    ds = sorted(os.path.join(FIXTURES, c) for c in os.listdir(FIXTURES)
                if os.path.exists(os.path.join(FIXTURES, c, "expected.safetensors"))
                and not is_smolvla(os.path.join(FIXTURES, c)))
    assert ds, "no fixtures: run python -m evla_ref.make_fixtures"
    return ds


def model_dirs():
    return fixture_dirs() + [os.path.join(MODELS, "evla-tiny-random")]


@check
def model_tensor_names_and_shapes():
    for d in model_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, _ = st.read(os.path.join(d, "model.safetensors"))
        want = expected_tensor_shapes(cfg)
        assert set(t) == set(want), (d, sorted(set(t) ^ set(want))[:10])
        for k, shape in want.items():
            assert t[k].shape == shape and t[k].dtype == np.float32, (d, k, t[k].shape)
        assert os.path.getsize(os.path.join(d, "model.safetensors")) < 8e6


def load_inputs(t, cfg):
    imgs = [t[f"input.image.{k}"] for k in range(cfg["vision"].get("num_images", 1))]
    return imgs, t["input.ids"].tolist(), t.get("input.state"), t["input.noise"]


@check
def fixtures_match_table_and_prompt():
    for d in fixture_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, meta = st.read(os.path.join(d, "expected.safetensors"))
        want = expected_output_shapes(cfg)
        L = len(t["input.ids"]) + want["projector.out"][0]  # [BOS, visual, rest]
        for l in range(cfg["llm"]["num_hidden_layers"] + 1):
            want[f"llm.hidden.{l}"] = (L, cfg["llm"]["hidden_size"])
        outputs = {k for k in t if not k.startswith("input.")}
        assert outputs == set(want), (d, sorted(outputs ^ set(want)))
        for k, shape in want.items():
            assert t[k].shape == shape and t[k].dtype == np.float32, (d, k)
        S = cfg["vision"]["encoders"][0]["image_size"]
        for k in range(cfg["vision"].get("num_images", 1)):
            assert t[f"input.image.{k}"].shape == (S, S, 3) and t[f"input.image.{k}"].dtype == np.uint8
        assert t["input.noise"].shape == want["actions"]
        sd = cfg["action_head"].get("state_dim", 0)
        assert ("input.state" in t) == (sd > 0) and (sd == 0 or t["input.state"].shape == (sd,))
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, cfg["prompt"]["tokenizer"]))
        ids = build_prompt_ids(cfg, sp, meta["instruction"])
        assert t["input.ids"].dtype == np.int64 and t["input.ids"].tolist() == ids, (d, ids)
        assert ids[0] == 1 and ids[-1] == cfg["prompt"]["cognition_token_id"]
        assert ids[-2] == cfg["prompt"]["space_token_id"]
        assert sp.get_piece_size() == cfg["llm"]["vocab_size"]


@check
def fixtures_reproduce_and_are_deterministic():
    # Bitwise between two runs here; against the committed file only to rounding, because
    # OpenBLAS picks its kernels (and so its summation order) by CPU.
    torch.set_num_threads(1)
    for d in fixture_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, _ = st.read(os.path.join(d, "expected.safetensors"))
        model = load_model(d)
        a = forward_all(model, *load_inputs(t, cfg))
        b = forward_all(model, *load_inputs(t, cfg))
        worst = (0.0, None)
        for k in a:
            assert np.array_equal(a[k], b[k]), (d, k, "not deterministic")
            worst = max(worst, (nmse(a[k], t[k]), k))
            assert worst[0] < 1e-10, (d, k, f"differs from expected.safetensors, NMSE {worst[0]:.1e}")
        print(f"    {os.path.basename(d)}: worst NMSE vs expected.safetensors {worst[0]:.1e} ({worst[1]})")


@check
def fixtures_fp64_agree_with_fp32():
    for d in fixture_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, _ = st.read(os.path.join(d, "expected.safetensors"))
        out = forward_all(load_model(d, torch.float64), *load_inputs(t, cfg))
        errs = {k: nmse(t[k], out[k]) for k in out}
        worst = max(errs, key=errs.get)
        print(f"    {os.path.basename(d)}: worst fp32-vs-fp64 NMSE {errs[worst]:.1e} ({worst})")
        for k, e in errs.items():
            assert e < 1e-9, (d, k, e)


@check
def cfg_guidance_matches_separate_branches():
    """The batched [x, x] CFG step equals two separate batch-1 DiT calls."""
    for d in fixture_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        if cfg["action_head"]["cfg_scale"] <= 1.0:
            continue
        t, _ = st.read(os.path.join(d, "expected.safetensors"))
        m = load_model(d, torch.float64)
        x = torch.from_numpy(t["input.noise"].astype(np.float64))[None]
        cog = torch.from_numpy(t["llm.cognition"].astype(np.float64))[None]
        state = torch.from_numpy(t["input.state"].astype(np.float64))[None] if "input.state" in t else None
        with torch.no_grad():
            c = m.dit(x, [90], cog, state)[0].numpy()
            u = m.dit(x, [90], m.dit.z_embedder.uncondition, state)[0].numpy()
        guided = u + cfg["action_head"]["cfg_scale"] * (c - u)
        assert nmse(t["dit.eps.0"], guided) < 1e-9
        rel = np.sqrt(nmse(c, u))
        assert rel > 0.01, f"cond and uncond eps barely differ ({rel:.3f}): CFG would go untested"
        print(f"    {os.path.basename(d)}: |eps_c - eps_u| / |eps_u| = {rel:.3f}")


# ------------------------------------------------------------------ independent numpy re-derivation
# A second, loop-level transcription of docs/format.md in float64 numpy, to
# catch reshape/permute slips in the torch modules.

def _ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    return y if w is None else y * w + b


def _mha(x, wqkv, bqkv, wo, bo, heads):
    n, d = x.shape
    hd = d // heads
    qkv = x @ wqkv.T + bqkv
    out = np.zeros((n, d))
    for h in range(heads):
        q = qkv[:, h * hd:(h + 1) * hd]
        k = qkv[:, d + h * hd:d + (h + 1) * hd]
        v = qkv[:, 2 * d + h * hd:2 * d + (h + 1) * hd]
        s = q @ k.T / math.sqrt(hd)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, h * hd:(h + 1) * hd] = (p / p.sum(-1, keepdims=True)) @ v
    return out @ wo.T + bo


def _gelu_erf(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def numpy_vit(w, e, img):
    p, P, D = e["prefix"], e["patch_size"], e["hidden_size"]
    g = e["image_size"] // P
    x = (img / 255.0 - np.array(e["image_mean"])) / np.array(e["image_std"])
    toks = []
    for r in range(g):
        for c in range(g):
            patch = x[r * P:(r + 1) * P, c * P:(c + 1) * P, :].transpose(2, 0, 1).reshape(-1)
            toks.append(w[f"{p}.patch_embed.proj.weight"].reshape(D, -1) @ patch + w[f"{p}.patch_embed.proj.bias"])
    x = np.stack(toks) + w[f"{p}.pos_embed"][0]
    pre = []
    if e.get("class_token"):
        pre.append(w[f"{p}.cls_token"][0])
    if e.get("num_registers", 0):
        pre.append(w[f"{p}.reg_token"][0])
    x = np.concatenate(pre + [x])
    for i in range(e["feature_layer"] + 1):
        b = lambda n: w[f"{p}.blocks.{i}.{n}"]
        ls1 = b("ls1.gamma") if e.get("layer_scale") else 1.0
        ls2 = b("ls2.gamma") if e.get("layer_scale") else 1.0
        x = x + ls1 * _mha(_ln(x, b("norm1.weight"), b("norm1.bias"), e["norm_eps"]), b("attn.qkv.weight"),
                           b("attn.qkv.bias"), b("attn.proj.weight"), b("attn.proj.bias"), e["num_heads"])
        h = _ln(x, b("norm2.weight"), b("norm2.bias"), e["norm_eps"])
        h = _gelu_erf(h @ b("mlp.fc1.weight").T + b("mlp.fc1.bias")) @ b("mlp.fc2.weight").T + b("mlp.fc2.bias")
        x = x + ls2 * h
    return x[len(x) - g * g:]


def numpy_dit(w, a, x, t, z, state):
    p, H = a["prefix"], a["hidden_size"]
    W = lambda n: w[f"{p}.{n}"]
    half = a["frequency_embedding_size"] // 2
    args = t * np.exp(-math.log(10000) * np.arange(half) / half)
    temb = np.concatenate([np.cos(args), np.sin(args)])
    h = temb @ W("t_embedder.mlp.0.weight").T + W("t_embedder.mlp.0.bias")
    h = h / (1 + np.exp(-h))
    cond = h @ W("t_embedder.mlp.2.weight").T + W("t_embedder.mlp.2.bias")
    cond = cond + z @ W("z_embedder.linear.weight").T + W("z_embedder.linear.bias")
    if state is not None:
        cond = cond + state @ W("s_embedder.linear.weight").T + W("s_embedder.linear.bias")
    tok = np.concatenate([cond[None], x @ W("x_embedder.linear.weight").T + W("x_embedder.linear.bias")])
    tok = tok + W("positional_embedding").reshape(-1, H)
    for i in range(a["num_layers"]):
        b = lambda n: W(f"blocks.{i}.{n}")
        tok = tok + _mha(_ln(tok, None, None, a["norm_eps"]), b("attn.qkv.weight"), b("attn.qkv.bias"),
                         b("attn.proj.weight"), b("attn.proj.bias"), a["num_heads"])
        m = _gelu_tanh(_ln(tok, None, None, a["norm_eps"]) @ b("mlp.fc1.weight").T + b("mlp.fc1.bias"))
        tok = tok + m @ b("mlp.fc2.weight").T + b("mlp.fc2.bias")
    out = _ln(tok, None, None, a["norm_eps"]) @ W("final_layer.linear.weight").T + W("final_layer.linear.bias")
    return out[1:]


@check
def fixtures_match_numpy_rederivation():
    for d in fixture_dirs():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, _ = st.read(os.path.join(d, "expected.safetensors"))
        w = {k: v.astype(np.float64) for k, v in st.read(os.path.join(d, "model.safetensors"))[0].items()}
        errs = {}
        # vision: images one after the other, per encoder
        for ei, e in enumerate(cfg["vision"]["encoders"]):
            f = np.concatenate([numpy_vit(w, e, t[f"input.image.{k}"].astype(np.float64))
                                for k in range(cfg["vision"]["num_images"])])
            errs[f"vision.{ei}.features"] = nmse(t[f"vision.{ei}.features"], f)
        # projector from the stored features
        x = np.concatenate([t[f"vision.{ei}.features"] for ei in range(len(cfg["vision"]["encoders"]))], -1)
        x = x.astype(np.float64)
        pp, nlin = cfg["projector"]["prefix"], len(cfg["projector"]["hidden_dims"]) + 1
        for i in range(nlin):
            x = x @ w[f"{pp}.{2 * i}.weight"].T + w[f"{pp}.{2 * i}.bias"]
            x = _gelu_erf(x) if i < nlin - 1 else x
        errs["projector.out"] = nmse(t["projector.out"], x)
        # LM input splicing: [BOS, visual tokens, rest]
        emb = w[f"{cfg['llm']['prefix']}.model.embed_tokens.weight"][t["input.ids"]]
        seq = np.concatenate([emb[:1], t["projector.out"], emb[1:]])
        errs["llm.hidden.0"] = nmse(t["llm.hidden.0"], seq)
        last = t[f"llm.hidden.{cfg['llm']['num_hidden_layers']}"][-1].astype(np.float64)
        nw = w[f"{cfg['llm']['prefix']}.model.norm.weight"]
        cog = nw * last / np.sqrt((last ** 2).mean() + cfg["llm"]["rms_norm_eps"])
        errs["llm.cognition"] = nmse(t["llm.cognition"], cog)
        # whole sampler from the stored cognition feature
        a = cfg["action_head"]
        cog = t["llm.cognition"].astype(np.float64)
        unc = w[f"{a['prefix']}.z_embedder.uncondition"][0]
        st_ = t["input.state"].astype(np.float64) if "input.state" in t else None
        x = t["input.noise"].astype(np.float64)
        for s, (ts, acp, prev) in enumerate(ddim_schedule(a["train_steps"], a["sample_steps"])):
            eps = numpy_dit(w, a, x, ts, cog, st_)
            if a["cfg_scale"] > 1:
                u = numpy_dit(w, a, x, ts, unc, st_)
                eps = u + a["cfg_scale"] * (eps - u)
            x0 = (x - math.sqrt(1 - acp) * eps) / math.sqrt(acp)
            x = math.sqrt(prev) * x0 + math.sqrt(1 - prev) * eps
            errs[f"dit.eps.{s}"] = nmse(t[f"dit.eps.{s}"], eps)
            errs[f"dit.x.{s}"] = nmse(t[f"dit.x.{s}"], x)
        worst = max(errs, key=errs.get)
        print(f"    {os.path.basename(d)}: worst NMSE vs numpy {errs[worst]:.1e} ({worst})")
        for k, e in errs.items():
            assert e < 1e-9, (d, k, e)


# ------------------------------------------------------------------ plans

def plan_fixtures():
    """(fixture dir, plan json path, expected path, int8 mode) for every stored plan fixture."""
    out = []
    for d in fixture_dirs():
        pd = os.path.join(d, "plans")
        if not os.path.isdir(pd):
            continue
        for f in sorted(x for x in os.listdir(pd) if x.endswith(".json")):
            stem = f[:-5]
            if os.path.exists(os.path.join(pd, f"{stem}.expected.safetensors")):
                out.append((d, f, f"{stem}.expected.safetensors", "weight_only"))
            else:  # an int8 plan: one file per form of the products
                out += [(d, f, f"{stem}.{mode}.expected.safetensors", mode) for mode in plans.INT8_MODES]
    assert len(out) >= 14, "plan fixtures missing: run python -m evla_ref.make_plan_fixtures"
    return out


def run_plan(model, cfg, t, plan_text, mode="weight_only"):
    plan = plans.parse(plan_text, cfg["llm"]["num_hidden_layers"])
    return plans.forward_planned(model, plan, *load_inputs(t, cfg), int8_mode=mode)


@check
def plan_fixtures_reproduce():
    torch.set_num_threads(1)
    for d, f, name, mode in plan_fixtures():
        cfg = json.load(open(os.path.join(d, "config.json")))
        t, _ = st.read(os.path.join(d, "plans", name))
        text = open(os.path.join(d, "plans", f)).read()
        out = run_plan(load_model(d), cfg, t, text, mode)
        # A BF16 action head amplifies a rounding flip over the sampling steps.
        tol = 1e-4 if json.loads(text).get("precision", {}).get("action_head") == "bf16" else 1e-10
        for k, v in out.items():
            e = nmse(v, t[k])
            assert e < (tol if k.startswith(("dit.", "actions")) else 1e-10), (d, name, k, e)


def plan_text(**body):
    return json.dumps(dict({"evla_plan": 1, "name": "check"}, **body))


@check
def planned_reference_agrees_with_dense_rewrites():
    """Each plan part against the dense reference on a rewritten model: a dropped
    sub-layer = its output projection zeroed; kept MLP channels = the others' down
    columns zeroed; int8 weight-only = the dequantized weights; every token kept, a
    cache refreshing every step and fp32 precision = dense."""
    d = os.path.join(FIXTURES, "dual_gqa_cfg")
    cfg = json.load(open(os.path.join(d, "config.json")))
    t, _ = st.read(os.path.join(d, "expected.safetensors"))
    model = load_model(d)
    L, F = cfg["llm"]["num_hidden_layers"], cfg["llm"]["intermediate_size"]
    nv = t["projector.out"].shape[0]
    dense = forward_all(model, *load_inputs(t, cfg))

    def rewritten(edit):
        m = load_model(d)
        with torch.no_grad():
            edit(m.llm.model.layers)
        return forward_all(m, *load_inputs(t, cfg))

    def dequantize_linears(layers):
        for lin in (m for layer in layers for m in layer.modules() if isinstance(m, torch.nn.Linear)):
            codes, scale = plans.quantize_rows(lin.weight)
            lin.weight.copy_(scale[:, None] * codes)

    keep = list(range(0, F, 3))
    drop = [c for c in range(F) if c not in keep]
    cases = [
        (plan_text(llm={"num_layers": L, "drop_attention": [1]}),
         rewritten(lambda ls: ls[1].self_attn.o_proj.weight.zero_())),
        (plan_text(llm={"num_layers": L, "drop_blocks": [2]}),
         rewritten(lambda ls: (ls[2].self_attn.o_proj.weight.zero_(), ls[2].mlp.down_proj.weight.zero_()))),
        (plan_text(llm={"num_layers": L, "intermediate_size": F, "mlp_channels": {"0": keep}}),
         rewritten(lambda ls: ls[0].mlp.down_proj.weight.index_fill_(1, torch.tensor(drop), 0.0))),
        (plan_text(precision={"llm": "int8"}), rewritten(dequantize_linears)),
        (plan_text(tokens={"keep": nv, "after_layer": 1}), dense),
        (plan_text(cache={"interval": 1}, precision={"vision": "fp32", "llm": "fp32"}), dense),
    ]
    for text, want in cases:
        got = run_plan(model, cfg, t, text)
        for k in ("llm.cognition", "actions.normalized"):
            e = nmse(got[k], want[k])
            assert e < 1e-10, (text, k, e)
    # And each of those plans does move the output, so the agreement is not vacuous.
    for text, _ in cases[:4]:
        assert nmse(run_plan(model, cfg, t, text)["llm.cognition"], dense["llm.cognition"]) > 1e-8, text


# ------------------------------------------------------------------ SmolVLA

SMOLVLA = os.path.join(FIXTURES, "smolvla_tiny")


def smolvla_inputs(t, meta):
    cams = [t[k] for k in sorted(x for x in t if x.startswith("input.image."))]
    return cams, [int(i) for i in t["input.ids"]], t["input.state"], t["input.noise"]


@check
def smolvla_fixture_reproduces():
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        make_smolvla_fixture.main(d)
        got, _ = st.read(os.path.join(d, "expected.safetensors"))
    want, _ = st.read(os.path.join(SMOLVLA, "expected.safetensors"))
    assert sorted(got) == sorted(want), (sorted(got), sorted(want))
    for k in want:
        assert np.array_equal(got[k], want[k]), k


@check
def smolvla_dropping_language_padding_is_exact():
    """LeRobot pads the language to tokenizer_max_length and masks the pads;
    the runtime drops them. Same actions, same outputs at the valid rows."""
    torch.set_num_threads(1)
    t, meta = st.read(os.path.join(SMOLVLA, "expected.safetensors"))
    model = smolvla.SmolVLA(SMOLVLA)
    args = smolvla_inputs(t, meta)
    with torch.no_grad():
        a, sa = model.forward(*args)
        b, sb = model.forward(*args, pad_to=model.cfg.tokenizer_max_length)
    n_pad = model.cfg.tokenizer_max_length - len(args[1])
    assert n_pad > 0
    print(f"    {n_pad} pad tokens: actions NMSE {nmse(b, a):.1e}")
    assert nmse(b, a) < 1e-12
    for k in sa:
        if k.startswith("llm.output."):  # the padded prefix has n_pad more rows before the state
            keep = torch.cat([sb[k][:-1 - n_pad], sb[k][-1:]])
            assert nmse(keep, sa[k]) < 1e-12, k


def main():
    failed = 0
    for fn in CHECKS:
        try:
            fn()
            print(f"ok    {fn.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL  {fn.__name__}")
            traceback.print_exc()
    print(f"{len(CHECKS) - failed}/{len(CHECKS)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
