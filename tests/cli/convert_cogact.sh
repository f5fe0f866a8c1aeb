#!/usr/bin/env bash
# evla convert cogact on a torch.save checkpoint in CogACT's layout, written
# by PyTorch from a fixture model's weights: the f32 conversion runs to the
# same actions bit for bit, bf16 and int8 (the LM's matrices as int8 codes
# with per-row scales, used in place) within NMSE 1e-2; several datasets'
# statistics and unnorm_key; hostile and broken checkpoints are refused and
# leave nothing behind.
set -euo pipefail
evla=$1 model=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=/usr/bin/python3

# The checkpoint, the statistics and a CogACT config.json naming no known size.
"$py" - "$model" "$tmp" <<'PY'
import collections, json, os, sys
import torch
sys.path.insert(0, os.path.join(os.path.dirname(sys.argv[1]), "..", "python"))
from evla_ref.safetensors_io import read
model, tmp = sys.argv[1], sys.argv[2]
tensors, _ = read(os.path.join(model, "model.safetensors"))
groups = collections.OrderedDict()
for name, arr in tensors.items():
    g, rest = name.split(".", 1)
    groups.setdefault(g, collections.OrderedDict())[rest] = torch.from_numpy(arr.copy())
groups["ema_diffusion"] = collections.OrderedDict((k, v * 0) for k, v in groups["action_model"].items())
torch.save({"model": groups}, os.path.join(tmp, "ckpt.pt"))
# Broken variants: a group missing, one layer's tensor of another shape.
torch.save({"model": {k: v for k, v in groups.items() if k != "llm_backbone"}}, os.path.join(tmp, "no_llm.pt"))
bad = {k: collections.OrderedDict(v) for k, v in groups.items()}
bad["llm_backbone"]["llm.model.layers.1.self_attn.q_proj.weight"] = torch.zeros(8, 8)
torch.save({"model": bad}, os.path.join(tmp, "bad_shape.pt"))
# A pickle that would run a shell command if it were unpickled by executing it.
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(tmp, "pwned"),))
torch.save({"model": {"projector": {"w": Evil()}}}, os.path.join(tmp, "evil.pt"))
norm = json.load(open(os.path.join(model, "config.json")))["action_normalization"]
a = {k: norm[k] for k in ("q01", "q99", "mask")}
json.dump({"fractal20220817_data": {"action": a},
           "bridge_orig": {"action": dict(a, q01=[2 * x for x in a["q01"]])}},
          open(os.path.join(tmp, "dataset_statistics.json"), "w"))
json.dump({"vla": {"base_vlm": "tiny-test+1m"}, "action_model_type": "DiT-T"}, open(os.path.join(tmp, "config.json"), "w"))
PY

heads=(--set vision.encoders.0.num_heads=4 --set vision.encoders.1.num_heads=5 --set llm.num_attention_heads=4
       --set llm.num_key_value_heads=4 --set action_head.num_heads=4 --set prompt.space_token_id=221
       --set action_head.n_action_steps=4)
common=(-c "$tmp/ckpt.pt" --config "$tmp/config.json" --stats "$tmp/dataset_statistics.json"
        --tokenizer "$model/tokenizer.model" -q)

# Without head counts the error says which --set gives them, and nothing is written.
if "$evla" convert cogact "${common[@]}" -o "$tmp/x" 2>"$tmp/err"; then exit 1; fi
grep -q "set them with --set: vision.encoders.0.num_heads" "$tmp/err"
test ! -e "$tmp/x"

"$evla" convert cogact "${common[@]}" "${heads[@]}" -o "$tmp/f32" | grep -q "not converted: ema_diffusion"
"$evla" convert cogact "${common[@]}" "${heads[@]}" --dtype bf16 --shard-gb 0.001 -o "$tmp/bf16" >/dev/null
test -f "$tmp/bf16/model.safetensors.index.json"
"$evla" convert cogact "${common[@]}" "${heads[@]}" --ema -o "$tmp/ema" >/dev/null
"$evla" convert cogact "${common[@]}" "${heads[@]}" --dtype int8 -o "$tmp/int8" >/dev/null
"$evla" info -m "$tmp/f32" | grep -q "statistics   2 datasets: bridge_orig, fractal20220817_data"

run() { "$evla" run -m "$1" -i "$model/example.png" -p "Pick up the Red Block" --seed 11 -t 1 --json "${@:2}"; }
run "$model" >"$tmp/ref.json"
if run "$tmp/f32" >/dev/null 2>"$tmp/err"; then exit 1; fi
grep -q "choose one with unnorm_key: bridge_orig, fractal20220817_data" "$tmp/err"
run "$tmp/f32" --unnorm-key fractal20220817_data >"$tmp/f32.json"
run "$tmp/f32" --unnorm-key bridge_orig >"$tmp/bridge.json"
run "$tmp/bf16" --unnorm-key fractal20220817_data >"$tmp/bf16.json"
run "$tmp/ema" --unnorm-key fractal20220817_data >"$tmp/ema.json"
run "$tmp/int8" --unnorm-key fractal20220817_data >"$tmp/int8.json"
# An int8 layer has no fp32 weights to run fp32 products from: refused by name.
echo '{"evla_plan": 1, "precision": {"llm": "fp32"}}' >"$tmp/fp32.json"
if run "$tmp/int8" --unnorm-key fractal20220817_data --plan "$tmp/fp32.json" >/dev/null 2>"$tmp/err"; then exit 1; fi
grep -q "fp32 products of a layer stored as int8" "$tmp/err"
# Pruning would have to carry the per-row scales along: refused, pointing at the order that works.
echo '{"evla_plan": 1, "llm": {"num_layers": 4, "drop_blocks": [1]}}' >"$tmp/drop.json"
if "$evla" prune -m "$tmp/int8" --plan "$tmp/drop.json" -o "$tmp/pruned8" 2>"$tmp/err"; then exit 1; fi
grep -q "is stored as int8; prune the model before converting it" "$tmp/err"
"$py" - "$tmp" "$model" <<'PY'
import json, os, sys
import numpy as np
t = sys.argv[1]
a = {k: np.array(json.load(open(f"{t}/{k}.json"))["actions"]) for k in ("ref", "f32", "bridge", "bf16", "ema", "int8")}
assert (a["f32"] == a["ref"]).all(), "f32 conversion changed the actions"
assert not (a["bridge"] == a["ref"]).all(), "unnorm_key chose nothing"
nmse = ((a["bf16"] - a["ref"]) ** 2).sum() / (a["ref"] ** 2).sum()
assert 0 < nmse < 1e-2, nmse
assert not (a["ema"] == a["ref"]).all(), "--ema kept action_model"
print("bf16 NMSE", nmse)
nmse8 = ((a["int8"] - a["ref"]) ** 2).sum() / (a["ref"] ** 2).sum()
assert 0 < nmse8 < 1e-2, nmse8
print("int8 NMSE", nmse8)
# The LM's projections are I8 with one F32 scale per row; everything else BF16.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(sys.argv[2])), "..", "python"))
from evla_ref.safetensors_io import read_header
h, _ = read_header(f"{t}/int8/model.safetensors")
q = "llm_backbone.llm.model.layers.0.mlp.down_proj.weight"
assert h[q]["dtype"] == "I8" and h[q + "_scale"]["dtype"] == "F32", (h[q], h.get(q + "_scale"))
assert h[q + "_scale"]["shape"] == [h[q]["shape"][0]]
assert h["llm_backbone.llm.model.embed_tokens.weight"]["dtype"] == "BF16"
assert sum(v["dtype"] == "I8" for v in h.values()) == 7 * 4  # 4 LM layers
PY

# Refused, with a message naming the problem, leaving no output behind.
expect_fail() {
  local words=$1; shift
  if "$evla" convert cogact "$@" -o "${out:-$tmp/out}" -q >/dev/null 2>"$tmp/err"; then echo "accepted: $*"; exit 1; fi
  grep -qF -- "$words" "$tmp/err" || { echo "expected '$words', got:"; cat "$tmp/err"; exit 1; }
  test ! -e "$tmp/out" && ! compgen -G "$tmp/out.converting*" >/dev/null
}
expect_fail "refuses global 'posix.system'" -c "$tmp/evil.pt"
test ! -e "$tmp/pwned"
expect_fail "no tensor 'llm_backbone.llm.model.embed_tokens.weight'" -c "$tmp/no_llm.pt" "${heads[@]}"
expect_fail "layers.1.self_attn.q_proj.weight' has shape [8, 8]" -c "$tmp/bad_shape.pt" "${heads[@]}"
head -c 3000 "$tmp/ckpt.pt" >"$tmp/cut.pt"
expect_fail "not a readable zip archive" -c "$tmp/cut.pt"
expect_fail "dtype" -c "$tmp/ckpt.pt" --dtype f8
out=$tmp/f32 expect_fail "exists and is not an empty directory" -c "$tmp/ckpt.pt" "${heads[@]}"
cmp "$tmp/f32/config.json" <("$evla" convert cogact "${common[@]}" "${heads[@]}" -o "$tmp/again" >/dev/null && cat "$tmp/again/config.json")
expect_fail "--set 'llm.nope.x=1': the config has no section 'nope'" -c "$tmp/ckpt.pt" "${heads[@]}" --set llm.nope.x=1
expect_fail "--set 'action_head.cfg_scal=3': no field 'cfg_scal' here (did you mean 'cfg_scale'?)" -c "$tmp/ckpt.pt" "${heads[@]}" --set action_head.cfg_scal=3
# A Llama-2 7B preset named for an LM whose width it does not divide: no preset, the heads asked for.
echo '{"vla": {"base_vlm": "prism-dinosiglip-224px+7b"}, "action_model_type": "DiT-B"}' >"$tmp/cfg7b.json"
expect_fail "set them with --set" -c "$tmp/ckpt.pt" --config "$tmp/cfg7b.json"
echo "convert ok"
