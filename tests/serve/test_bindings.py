#!/usr/bin/python3
"""Checks for the `evla` Python module (plain script: exits non-zero on failure).

    PYTHONPATH=build/python /usr/bin/python3 tests/serve/test_bindings.py
"""
import json
import os
import tempfile
import threading
import time

import numpy as np

import pycheck  # noqa: E402  (beside this script)
from pycheck import FIXTURE, ROOT, TINY, check, image, raises  # noqa: E402

import evla  # noqa: E402  (PYTHONPATH=<build>/python)


def test_tiny():
    p = evla.Policy(TINY, threads=1)
    m = p.metadata
    check(m["model"] == "evla-tiny-random", m)
    check(m["image_keys"] == ["observation/image"], m)
    check(m["state_dim"] == 0 and m["plan"]["name"] == "dense", m)
    obs = {"observation/image": image(64, 64), "prompt": "put the eggplant in the basket", "seed": 3}
    out = p.infer(obs)
    a = out["actions"]
    check(a.dtype == np.float32 and a.shape == (m["action_horizon"], m["action_dim"]), a.shape)
    check(np.all(np.isfinite(a)), "finite actions")
    check(out["policy_timing"]["infer_ms"] > 0, out["policy_timing"])
    check(np.array_equal(p.infer(obs)["actions"], a), "same seed, same actions")
    check(not np.array_equal(p.infer(dict(obs, seed=np.int64(4)))["actions"], a), "seed changes the noise")
    # Full camera frames are resized; a non-contiguous view is fine too.
    big = image(480, 640)
    check(p.infer(dict(obs, **{"observation/image": big}))["actions"].shape == a.shape, "resize")
    check(p.infer(dict(obs, **{"observation/image": big[::2, ::2]}))["actions"].shape == a.shape, "strided")
    # Nested keys, as openpi's aloha-style observations.
    nested = {"observation": {"image": obs["observation/image"]}, "prompt": obs["prompt"], "seed": 3}
    check(np.array_equal(p.infer(nested)["actions"], a), "nested keys")
    # Bad input is a ValueError (evla.ObservationError) naming the key.
    raises(ValueError, lambda: p.infer({"prompt": "x"}), "missing key 'observation/image'")
    raises(evla.ObservationError, lambda: p.infer(dict(obs, **{"observation/image": image(64, 64).astype(np.float32)})),
           "images must be uint8")
    raises(ValueError, lambda: p.infer(dict(obs, **{"observation/image": image(64, 64)[:, :, :2]})), "H×W×3")
    raises(ValueError, lambda: p.infer(dict(obs, **{"observation/image": [[1, 2, 3]]})), "numpy uint8 array")
    raises(ValueError, lambda: p.infer(dict(obs, prompt=5)), "prompt: expected a string")
    raises(ValueError, lambda: p.infer(dict(obs, seed=-1)), "non-negative")
    raises(RuntimeError, lambda: evla.Policy(os.path.join(ROOT, "no-such-model")), "no-such-model")
    # Under a plan that selects tokens after layer 1, layer inputs from 1 on hold only the kept rows.
    with tempfile.TemporaryDirectory() as tmp:
        plan = os.path.join(tmp, "tokens.json")
        with open(plan, "w") as f:
            json.dump({"evla_plan": 1, "name": "tokens", "tokens": {"keep": 8, "after_layer": 1}}, f)
        q = evla.Policy(TINY, plan=plan, threads=1)
        rows = q.infer(obs, lm_layer_input=0)["lm_layer_input"].shape[0]
        check(rows > 8, "layer 0 sees every token")
        kept = q.infer(obs)["kept_visual_tokens"]
        check(kept.dtype == np.int32 and len(kept) == 8 and len(set(kept.tolist())) == 8, kept)
        check(kept.min() >= 0 and kept.max() < rows, kept)
        check("kept_visual_tokens" not in p.infer(obs), "no selection, no kept tokens")
        raises(ValueError, lambda: q.infer(obs, lm_layer_input=1), "the plan selects tokens from layer 1 on")
    return p, obs


def test_fixture():
    p = evla.Policy(FIXTURE, threads=1)
    check(p.metadata["image_keys"] == ["observation/image", "observation/wrist_image"], p.metadata)
    obs = {"observation/image": image(28, 28, 1), "observation/wrist_image": image(28, 28, 2),
           "observation/state": np.array([0.1, -0.2, 0.3, 0.0, 1.0], dtype=np.float32), "prompt": "pick", "seed": 1}
    a = p.infer(obs)["actions"]
    check(a.shape == (p.metadata["action_horizon"], 4), a.shape)
    # float64 arrays and plain lists convert.
    check(np.array_equal(p.infer(dict(obs, **{"observation/state": [0.1, -0.2, 0.3, 0.0, 1.0]}))["actions"], a),
          "state as a list")
    raises(ValueError, lambda: p.infer(dict(obs, **{"observation/state": np.zeros(3)})), "expected 5 values")
    raises(ValueError, lambda: p.infer({k: v for k, v in obs.items() if k != "observation/wrist_image"}),
           "missing key 'observation/wrist_image'")
    # The cognition feature equals the PyTorch reference's on the fixture's own inputs.
    from evla_ref import safetensors_io
    ref, meta = safetensors_io.read(os.path.join(FIXTURE, "expected.safetensors"))
    out = p.infer({"observation/image": ref["input.image.0"], "observation/wrist_image": ref["input.image.1"],
                   "observation/state": ref["input.state"], "prompt": meta["instruction"]})
    want = ref["llm.cognition"]
    check(out["cognition"].shape == want.shape, out["cognition"].shape)
    nmse = float(np.sum((out["cognition"] - want) ** 2) / np.sum(want ** 2))
    check(nmse < 1e-8, f"cognition NMSE {nmse:.2e} against the reference")
    # An LM layer's input, every token, as the reference computes it; a layer it lacks is refused.
    h = p.infer({"observation/image": ref["input.image.0"], "observation/wrist_image": ref["input.image.1"],
                 "observation/state": ref["input.state"], "prompt": meta["instruction"]},
                lm_layer_input=1)["lm_layer_input"]
    want = ref["llm.hidden.1"]
    check(h.shape == want.shape, h.shape)
    nmse = float(np.sum((h - want) ** 2) / np.sum(want ** 2))
    check(nmse < 1e-8, f"layer-1 input NMSE {nmse:.2e} against the reference")
    raises(ValueError, lambda: p.infer(obs, lm_layer_input=2), "the LM has layers 0..1")
    # Capturing changes nothing else.
    a, b = p.infer(obs), p.infer(obs, lm_layer_input=0)
    check(np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["cognition"], b["cognition"]),
          "lm_layer_input changed the outputs")


def test_gil_released(p, obs):
    """A Python thread keeps running while another thread infers."""
    done = threading.Event()
    ticks = 0

    def work():
        for _ in range(4):
            p.infer(obs)
        done.set()

    t = threading.Thread(target=work)
    start = time.monotonic()
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    elapsed = time.monotonic() - start
    # With the GIL held through inference this loop would barely run.
    check(ticks > 0.3 * elapsed / 0.0011, f"only {ticks} ticks in {elapsed:.3f} s")


def test_smolvla():
    """LeRobot's SmolVLA through the same module: its metadata names the family
    and its cameras' keys; any frame size is resized with padding."""
    p = evla.Policy(os.path.join(ROOT, "tests", "fixtures", "smolvla_tiny"), threads=1)
    m = p.metadata
    check(m["family"] == "smolvla" and m["action_horizon"] == 8 and m["action_dim"] == 6, m)
    keys = m["image_keys"]
    check(len(keys) == 2, keys)
    obs = {keys[0]: image(48, 80, 1), keys[1]: image(96, 96, 2), "prompt": "pick up the red block",
           "observation/state": np.linspace(-1, 1, 5).astype(np.float32), "seed": 2}
    a = p.infer(obs)["actions"]
    check(a.shape == (8, 6) and np.all(np.isfinite(a)), a.shape)
    check(np.array_equal(p.infer(obs)["actions"], a), "same seed, same actions")
    raises(ValueError, lambda: p.infer(dict(obs, **{"observation/state": np.zeros(4, np.float32)})), "state")


def test_sim():
    check(hasattr(evla, "sim"), "evla.sim not built (the module was built without src/sim)")
    env = evla.sim.Env("matching", "pick", 0)
    img = env.render(64, 64)
    check(img.dtype == np.uint8 and img.shape == (64, 64, 3), img.shape)
    check(isinstance(env.instruction, str) and env.instruction, env.instruction)
    check(env.state().shape == (evla.sim.STATE_DIM,), env.state())
    env.step(np.zeros(evla.sim.ACTION_DIM, dtype=np.float32))
    check(env.steps == 1 and not env.success, (env.steps, env.success))
    raises(ValueError, lambda: env.step([0.0, 0.0]), "action values")
    check("pick" in evla.sim.tasks(), evla.sim.tasks())
    raises(RuntimeError, lambda: evla.sim.Env("matching", "fly", 0), "fly")


if __name__ == "__main__":
    policy, observation = test_tiny()
    test_fixture()
    test_gil_released(policy, observation)
    test_smolvla()
    test_sim()
    print(f"test_bindings: {pycheck.passed} checks passed")
