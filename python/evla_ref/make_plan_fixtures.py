"""Writes the plan parity fixtures: tests/fixtures/<case>/plans/<plan>.json and the
PyTorch reference's outputs under it, <plan>.expected.safetensors (int8 plans:
<plan>.<mode>.expected.safetensors, one per form of the runtime's int8 products).

    cd python && /usr/bin/python3 -m evla_ref.make_plan_fixtures [--root ..]

Runs on the fixture models make_fixtures wrote, with their stored inputs.
Deterministic (fixed channel draws, torch on one thread).
"""
import argparse
import json
import os

import numpy as np
import torch

from . import safetensors_io
from .model import load_model
from .plans import INT8_MODES, forward_planned, parse


CASES = ("dual_gqa_cfg", "sim_random", "single_mha_nocfg")


def channels(rng, n, keep):
    return sorted(int(c) for c in rng.choice(n, keep, replace=False))


def plans_for(case, cfg):
    """(name, plan JSON) pairs exercising each plan part on the case's shapes."""
    L = cfg["llm"]["num_hidden_layers"]
    F = cfg["llm"]["intermediate_size"]
    rng = np.random.RandomState(11)
    llm = lambda **kw: dict({"num_layers": L}, **kw)
    if case == "dual_gqa_cfg":  # 3 LM layers, 16 visual tokens, CFG, 2 DiT blocks, 10 steps
        return [
            ("sublayers", {"llm": llm(drop_attention=[1], drop_mlp=[2], intermediate_size=F,
                                      mlp_channels={"0": channels(rng, F, F // 2)})}),
            ("drop-block", {"llm": llm(drop_blocks=[1])}),
            ("tokens-efficientvla", {"tokens": {"keep": 6, "key": 2, "alpha": 0.5, "after_layer": 1}}),
            ("tokens-fastv-cognition", {"tokens": {"keep": 5, "after_layer": 2, "method": "fastv",
                                                   "queries": "cognition"}}),
            ("tokens-random", {"tokens": {"keep": 7, "after_layer": 1, "method": "random", "seed": 17}}),
            ("tokens-merge", {"tokens": {"keep": 6, "key": 2, "alpha": 0.5, "after_layer": 1, "merge": True}}),
            ("cache", {"cache": {"interval": 3, "start": 1}}),
            ("cache-blocks", {"cache": {"interval": 2, "start": 0, "blocks": [1]}}),
            # Refreshes once as the input changes past the threshold, once at the interval's limit.
            ("cache-adaptive", {"cache": {"interval": 4, "start": 1, "threshold": 0.4}}),
            ("bf16", {"llm": llm(bf16_layers=[0, 2]),
                      "precision": {"vision": "bf16", "projector": "bf16", "action_head": "bf16"}}),
            ("int8", {"precision": {"llm": "int8"}}),
            ("combined", {"llm": llm(drop_attention=[2], int8_layers=[0], intermediate_size=F,
                                     mlp_channels={"1": channels(rng, F, 3 * F // 4)}),
                          "tokens": {"keep": 8, "key": 3, "alpha": 0.4, "after_layer": 1},
                          "cache": {"interval": 2, "start": 2}}),
        ]
    if case == "sim_random":  # 3 LM layers, state, 16 visual tokens
        return [("efficientvla", {"llm": llm(drop_blocks=[2], intermediate_size=F,
                                             mlp_channels={"1": channels(rng, F, F // 2)}),
                                  "tokens": {"keep": 6, "key": 2, "after_layer": 1},
                                  "cache": {"interval": 2, "start": 1}})]
    if case == "single_mha_nocfg":  # 2 images of 16 tokens, no CFG, 5 steps
        return [("tokens-cache", {"tokens": {"keep": 10, "key": 3, "alpha": 0.6, "after_layer": 1},
                                  "cache": {"interval": 3, "start": 0}}),
                ("cache-adaptive", {"cache": {"interval": 3, "start": 0, "threshold": 0.3}})]
    return []


def write_case(root, case):
    d = os.path.join(root, "tests", "fixtures", case)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    expected, meta = safetensors_io.read(os.path.join(d, "expected.safetensors"))
    model = load_model(d)
    imgs = [expected[f"input.image.{k}"] for k in range(cfg["vision"]["num_images"])]
    ids = expected["input.ids"].tolist()
    out_dir = os.path.join(d, "plans")
    os.makedirs(out_dir, exist_ok=True)
    written, adaptive_reasons = [], set()
    for name, body in plans_for(case, cfg):
        text = json.dumps(dict({"evla_plan": 1, "name": name}, **body), indent=2) + "\n"
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            f.write(text)
        plan = parse(text, cfg["llm"]["num_hidden_layers"])
        int8 = any(lp["weights"] == "int8" for lp in plan["layers"])
        for mode in INT8_MODES if int8 else ("weight_only",):
            reasons = []
            res = forward_planned(model, plan, imgs, ids, expected.get("input.state"), expected["input.noise"],
                                  int8_mode=mode, refresh_reasons=reasons)
            refreshed = res["dit.refreshed"]
            if plan["cache"]["threshold"] > 0:  # an adaptive fixture sees it reuse and refresh by itself
                assert reasons and 0 in refreshed, (name, refreshed, reasons)
                adaptive_reasons.update(reasons)
            stem = f"{name}.{mode}" if int8 else name
            tensors = {k: v for k, v in expected.items() if k.startswith("input.")}  # self-contained
            tensors.update({k: np.asarray(v, np.float32) for k, v in res.items()})
            safetensors_io.write(os.path.join(out_dir, stem + ".expected.safetensors"), tensors,
                                 dict(meta, plan=name, int8_mode=mode, generator="evla_ref.make_plan_fixtures"))
            dense = expected["actions"]
            moved = float(np.sum((res["actions"] - dense) ** 2) / np.sum(dense ** 2))
            written.append(f"{case}/{stem}: refreshed {''.join(str(int(v)) for v in refreshed)}, "
                           f"kept {res.get('llm.kept_tokens', np.array([])).astype(int).tolist()}, "
                           f"actions NMSE vs dense {moved:.2e}")
    # dual_gqa_cfg's adaptive plan refreshes for both reasons (the change, and the interval's limit).
    assert case != "dual_gqa_cfg" or adaptive_reasons == {"threshold", "limit"}, adaptive_reasons
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--root", default=os.path.normpath(os.path.join(here, "..", "..")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for case in CASES:
        for line in write_case(args.root, case):
            print(line)


if __name__ == "__main__":
    main()
