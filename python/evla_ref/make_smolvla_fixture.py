"""Writes tests/fixtures/smolvla_tiny: a SmolVLA checkpoint in LeRobot's layout
with random weights at a small size, and what the reference (smolvla.py) computes
from fixed inputs.

- config.json: LeRobot's smolvla config (two cameras, a 5-value state, 6-value
  actions); `evla_vlm` gives the small VLM's sizes (a real checkpoint's come
  from vlm_model_name);
- model.safetensors: LeRobot's tensor names;
- policy_preprocessor.json / policy_postprocessor.json with their normalizer
  state files (mean / std of the state and the actions);
- tokenizer.json: the byte-level BPE fixture laid out as SmolVLM2's
  (tests/fixtures/bpe/smol.json);
- expected.safetensors: inputs (camera images of two shapes, both resampled,
  one padded; the state; the noise; the language ids) and every stage.

    PYTHONPATH=python /usr/bin/python3 -m evla_ref.make_smolvla_fixture tests/fixtures/smolvla_tiny
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

from . import bpe, images, safetensors_io, smolvla

VLM_SIZES = {"text_hidden": 64, "text_heads": 4, "text_kv_heads": 2, "head_dim": 16, "text_intermediate": 128,
             "rms_norm_eps": 1e-5, "vocab_size": 1024, "vision_hidden": 32, "vision_layers": 2, "vision_heads": 2,
             "vision_intermediate": 64, "vision_image_size": 64, "patch_size": 8, "scale_factor": 2,
             "vision_eps": 1e-6}

CONFIG = {
    "type": "smolvla", "n_obs_steps": 1, "chunk_size": 8, "n_action_steps": 8,
    "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"},
    "input_features": {"observation.images.camera1": {"type": "VISUAL", "shape": [3, 48, 80]},
                       "observation.images.camera2": {"type": "VISUAL", "shape": [3, 96, 96]},
                       "observation.state": {"type": "STATE", "shape": [5]}},
    "output_features": {"action": {"type": "ACTION", "shape": [6]}},
    "max_state_dim": 8, "max_action_dim": 8, "resize_imgs_with_padding": [64, 64], "empty_cameras": 0,
    "tokenizer_max_length": 16, "num_steps": 4, "use_cache": True,
    "vlm_model_name": "HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "load_vlm_weights": False,
    "add_image_special_tokens": False, "attention_mode": "cross_attn", "prefix_length": 0,
    "pad_language_to": "max_length", "num_expert_layers": -1, "num_vlm_layers": 4,
    "self_attn_every_n_layers": 2, "expert_width_multiplier": 0.75, "min_period": 4e-3, "max_period": 4.0,
    "evla_vlm": VLM_SIZES,
}


def weights(cfg, rng):
    v = cfg.vlm
    D, hd, Hq, Hkv = v["text_hidden"], v["head_dim"], v["text_heads"], v["text_kv_heads"]
    Dv, E = v["vision_hidden"], cfg.expert_width
    w = {}

    def mat(name, out, inp, bias=True, scale=None):
        s = scale if scale is not None else 1.0 / np.sqrt(inp)
        w[name + ".weight"] = rng.normal(0, s, (out, inp)).astype(np.float32)
        if bias:
            w[name + ".bias"] = rng.normal(0, 0.02, out).astype(np.float32)

    def norm(name, d, bias=False):
        w[name + ".weight"] = (1 + rng.normal(0, 0.1, d)).astype(np.float32)
        if bias:
            w[name + ".bias"] = rng.normal(0, 0.05, d).astype(np.float32)

    V = smolvla.VLM + "vision_model."
    P = v["patch_size"]
    n_patches = (v["vision_image_size"] // P) ** 2
    w[V + "embeddings.patch_embedding.weight"] = rng.normal(0, 1 / np.sqrt(3 * P * P), (Dv, 3, P, P)).astype(np.float32)
    w[V + "embeddings.patch_embedding.bias"] = rng.normal(0, 0.02, Dv).astype(np.float32)
    w[V + "embeddings.position_embedding.weight"] = rng.normal(0, 0.3, (n_patches, Dv)).astype(np.float32)
    for i in range(v["vision_layers"]):
        L = V + f"encoder.layers.{i}."
        norm(L + "layer_norm1", Dv, True)
        norm(L + "layer_norm2", Dv, True)
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            mat(L + "self_attn." + p, Dv, Dv)
        mat(L + "mlp.fc1", v["vision_intermediate"], Dv)
        mat(L + "mlp.fc2", Dv, v["vision_intermediate"])
    norm(V + "post_layernorm", Dv, True)
    s = v["scale_factor"]
    w[smolvla.VLM + "connector.modality_projection.proj.weight"] = rng.normal(
        0, 1 / np.sqrt(s * s * Dv) / np.sqrt(D), (D, s * s * Dv)).astype(np.float32)
    T = smolvla.VLM + "text_model."
    w[T + "embed_tokens.weight"] = rng.normal(0, 1 / np.sqrt(D), (v["vocab_size"], D)).astype(np.float32)
    norm(T + "norm", D)

    def llama_layer(L, width, F, kv_in):
        norm(L + "input_layernorm", width)
        norm(L + "post_attention_layernorm", width)
        mat(L + "self_attn.q_proj", Hq * hd, width, bias=False)
        mat(L + "self_attn.k_proj", Hkv * hd, kv_in, bias=False)
        mat(L + "self_attn.v_proj", Hkv * hd, kv_in, bias=False)
        mat(L + "self_attn.o_proj", width, Hq * hd, bias=False)
        mat(L + "mlp.gate_proj", F, width, bias=False)
        mat(L + "mlp.up_proj", F, width, bias=False)
        mat(L + "mlp.down_proj", width, F, bias=False)

    for i in range(cfg.num_vlm_layers):
        llama_layer(T + f"layers.{i}.", D, v["text_intermediate"], D)
    for i in range(cfg.num_expert_layers):
        cross = not (cfg.self_attn_every > 0 and i % cfg.self_attn_every == 0)
        llama_layer(smolvla.EXPERT + f"layers.{i}.", E, cfg.expert_intermediate, Hkv * hd if cross else E)
    norm(smolvla.EXPERT + "norm", E)
    w[smolvla.VLM.replace(".model.", ".") + "lm_head.weight"] = rng.normal(0, 0.02, (v["vocab_size"], D)).astype(np.float32)
    mat(smolvla.PREFIX + "state_proj", D, cfg.max_state_dim)
    mat(smolvla.PREFIX + "action_in_proj", E, cfg.max_action_dim)
    mat(smolvla.PREFIX + "action_out_proj", cfg.max_action_dim, E)
    mat(smolvla.PREFIX + "action_time_mlp_in", E, 2 * E)
    mat(smolvla.PREFIX + "action_time_mlp_out", E, E)
    return w


def write_processors(d, state_mean, state_std, action_mean, action_std):
    pre_state = "policy_preprocessor_step_5_normalizer_processor.safetensors"
    post_state = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    stats = {"observation.state.mean": state_mean, "observation.state.std": state_std,
             "action.mean": action_mean, "action.std": action_std}
    safetensors_io.write(os.path.join(d, pre_state), stats)
    safetensors_io.write(os.path.join(d, post_state), stats)
    norm_cfg = {"eps": 1e-8, "norm_map": CONFIG["normalization_mapping"]}
    pre = {"name": "policy_preprocessor", "steps": [
        {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
        {"registry_name": "to_batch_processor", "config": {}},
        {"registry_name": "smolvla_new_line_processor", "config": {}},
        {"registry_name": "tokenizer_processor", "config": {"max_length": 16, "padding": "max_length",
                                                            "padding_side": "right", "truncation": True}},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
        {"registry_name": "normalizer_processor", "config": norm_cfg, "state_file": pre_state}]}
    post = {"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor", "config": norm_cfg, "state_file": post_state},
        {"registry_name": "device_processor", "config": {"device": "cpu"}}]}
    for name, j in (("policy_preprocessor.json", pre), ("policy_postprocessor.json", post)):
        with open(os.path.join(d, name), "w") as f:
            json.dump(j, f, indent=1)


def main(out_dir):
    rng = np.random.default_rng(1234)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    cfg = smolvla.Config(CONFIG)
    safetensors_io.write(os.path.join(out_dir, "model.safetensors"), weights(cfg, rng))
    write_processors(out_dir, rng.normal(0, 0.5, 5).astype(np.float32), (0.5 + rng.random(5)).astype(np.float32),
                     rng.normal(0, 0.3, 6).astype(np.float32), (0.2 + rng.random(6)).astype(np.float32))
    src = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "bpe", "smol.json")
    shutil.copyfile(src, os.path.join(out_dir, "tokenizer.json"))

    scenes = np.random.RandomState(7)
    # 48 x 80 (downscaled to 38 x 64 and padded on top) and 96 x 96 (downscaled).
    cams = [images.tabletop(80, scenes)[16:64], images.tabletop(96, scenes)]
    instruction = "pick up the red block"
    ids = bpe.Tokenizer(os.path.join(out_dir, "tokenizer.json")).encode(instruction + "\n", True)[:cfg.tokenizer_max_length]
    state = rng.normal(0, 1, 5).astype(np.float32)
    noise = rng.normal(0, 1, (cfg.chunk, cfg.max_action_dim)).astype(np.float32)
    model = smolvla.SmolVLA(out_dir)
    with torch.no_grad():
        _, stages = model.forward(cams, ids, state, noise)
    tensors = {f"input.image.{k}": np.ascontiguousarray(c, dtype=np.uint8) for k, c in enumerate(cams)}
    tensors["input.ids"] = np.asarray(ids, dtype=np.int64)
    tensors["input.state"] = state
    tensors["input.noise"] = noise
    for k, v in stages.items():
        tensors[k] = v.detach().numpy().astype(np.float32)
    safetensors_io.write(os.path.join(out_dir, "expected.safetensors"), tensors, metadata={"instruction": instruction})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/smolvla_tiny")
