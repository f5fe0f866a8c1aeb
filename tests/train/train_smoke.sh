#!/usr/bin/env bash
# The training script end to end on a handful of demonstrations: a few steps
# with every training-only loss, an export the runtime loads and runs, then a
# resume that adds the grounding heads (fresh optimiser, warm-up from the
# resumed step), the action head fine-tuned alone, and the matching camera's
# patch of a known point.
set -euo pipefail
evla=$1 root=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$evla" sim gen --split matching --tasks all --episodes 10 --seed 100000 --size 64 --chunk 16 \
  --out "$tmp/demos" -t 1 >/dev/null 2>&1
S='{"vit_d":16,"vit_heads":1,"dit_d":16,"dit_layers":1,"dit_heads":1,"llm_d":32,"llm_heads":2,"llm_kv":1,"llm_ffn":64}'
train="env PYTHONPATH=$root/python /usr/bin/python3 $root/python/train/train.py --data $tmp/demos --out $tmp/export --size $S --state-dim 4 \
  --state-drop 0.3 --batch 4 --repeats 2 --threads 1 --warmup 4 --ckpt $tmp/ckpt.pt --log $tmp/log"
$train --steps 3 --aux-weight 1.0 --seed 0 >/dev/null
"$evla" run -m "$tmp/export" -i "$root/models/evla-tiny-random/example.png" -p "pick the red cube" \
  --state 0,0,0.1,1 -t 1 | grep -q "action chunk"
$train --steps 2 --aux-weight 1.0 --ground-weight 0.5 --attn-weight 0.3 --attn-layers 0,1 --patch-pos-weight 1 --mid-aux-layers 2 \
  --seed 1 --resume "$tmp/ckpt.pt" >/dev/null
grep -q "resumed from .* at step 3; new heads .*ground_q.weight.* optimiser restarted" "$tmp/log"
grep -q "new heads .*patch_pos.weight.*mid_aux.2.weight" "$tmp/log"
grep -q "patch position loss over every object" "$tmp/log"
# Warm-up restarts at the resumed step: the first logged rate is lr / warmup, not lr · 4 / warmup.
grep "step 4 loss" "$tmp/log" | grep -q "lr 1.25e-04"
grep -q "ground [0-9.]* attn [0-9.]* patch [0-9.]* " "$tmp/log"
# Every policy weight from an export (with its config, tokenizer and action statistics) and
# fresh training-only heads: at lr 0 the export comes back as it was. --far-weight
# oversamples the frames with the gripper away from the object.
PYTHONPATH=$root/python /usr/bin/python3 "$root/python/train/train.py" --data "$tmp/demos" --out "$tmp/reinit" --init-model "$tmp/export" \
  --steps 1 --lr 0 --batch 4 --repeats 2 --threads 1 --aux-weight 1.0 --far-weight 3 --log "$tmp/reinit.log" >/dev/null
grep -q "policy weights from $tmp/export" "$tmp/reinit.log"
grep -Eq -- "--far-weight 3.0: [0-9.]+% of frames far" "$tmp/reinit.log"
cmp "$tmp/export/config.json" "$tmp/reinit/config.json"
cmp "$tmp/export/tokenizer.model" "$tmp/reinit/tokenizer.model"
PYTHONPATH=$root/python /usr/bin/python3 - "$tmp/export" "$tmp/reinit" <<'PY'
import sys
import numpy as np
from evla_ref import safetensors_io
a, _ = safetensors_io.read(sys.argv[1] + "/model.safetensors")
b, _ = safetensors_io.read(sys.argv[2] + "/model.safetensors")
assert a.keys() == b.keys(), a.keys() ^ b.keys()
worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
assert worst < 1e-5, f"--init-model at lr 0 changed a weight by {worst}"
PY
# The action head alone on the frozen backbone's runtime features: the backbone's
# tensors stay exactly the checkpoint's, the head's change, and the export runs;
# a resized head (--head-size) exports a config the runtime loads.
pymod=$(dirname "$evla")/../python
if ls "$pymod"/evla*.so >/dev/null 2>&1; then
  head="env PYTHONPATH=$pymod:$root/python /usr/bin/python3 $root/python/train/finetune_head.py --ckpt $tmp/ckpt.pt --data $tmp/demos
    --model $tmp/export --features $tmp/features.npz --steps 20 --batch 8 --threads 1 --log $tmp/head.log"
  $head --out "$tmp/head" >/dev/null
  $head --out "$tmp/head2" --head-size '{"hidden_size":32,"num_heads":2}' >/dev/null
  grep -q "images not loaded: every feature is cached" "$tmp/head.log"  # the second run read the cache
  # With the LM's top layer: a separate cache of its inputs, the cognition row recomputed
  # from them equal to the runtime's (fp16 cache), and a cache of the other kind refused.
  $head --out "$tmp/top" --lm-layers 1 --features "$tmp/top.npz" --log "$tmp/top.log" >/dev/null
  grep "vs the runtime's" "$tmp/top.log" | awk '{ for (i = 1; i < NF; i++) if ($i == "NMSE") v = $(i + 1) }
    END { exit !(v != "" && v < 1e-4) }'
  if $head --out "$tmp/top2" --lm-layers 2 --features "$tmp/top.npz" 2>"$tmp/err" >/dev/null; then
    echo "a layer-11 cache was accepted for --lm-layers 2"; exit 1
  fi
  grep -q "cached for layer 11, --lm-layers 2 needs layer 10" "$tmp/err"
  # The auxiliary position regression (the checkpoint's aux head) trained with the top layer.
  $head --out "$tmp/topaux" --lm-layers 1 --aux-weight 0.5 --features "$tmp/top.npz" --log "$tmp/topaux.log" >/dev/null
  grep "^.* done:" "$tmp/topaux.log" | grep -Eq "aux 0\.[0-9]*[1-9]"
  if $head --out "$tmp/x" --aux-weight 0.5 2>"$tmp/err" >/dev/null; then
    echo "--aux-weight was accepted without --lm-layers"; exit 1
  fi
  grep -q "needs --lm-layers" "$tmp/err"
  # Features of a colour-jittered copy of every frame, cached beside the clean ones and reused.
  cp "$tmp/features.npz" "$tmp/aug.npz"
  $head --out "$tmp/aug" --augment-copies 1 --features "$tmp/aug.npz" --log "$tmp/aug.log" >/dev/null
  $head --out "$tmp/aug" --augment-copies 1 --features "$tmp/aug.npz" --log "$tmp/aug.log" >/dev/null
  test "$(grep -c "features of jittered copy 1/1" "$tmp/aug.log")" = 1
  # A head taken from an export comes back unchanged when it does not train (lr 0).
  $head --out "$tmp/again" --init-head "$tmp/head" --lr 0 --steps 1 >/dev/null
  # On-policy frames (evla sim gen --policy) train beside the expert's, with one feature cache
  # per directory, the policy's failed episodes included (the expert labelled every frame);
  # --init-model at lr 0 exports the model it started from.
  "$evla" sim gen --policy "$tmp/export" --episodes 2 --seed 200000 --out "$tmp/onpol" -t 1 -q >/dev/null
  $head --data "$tmp/demos,$tmp/onpol" --features "$tmp/features.npz,$tmp/onpol.npz" --init-model "$tmp/head" \
    --lr 0 --steps 1 --out "$tmp/mixed" >/dev/null
  # The grounding probe scores both directories' frames (one table row each), and which
  # patches a plan's token selection keeps (8 of the 64 visual tokens: chance 12.5%).
  echo '{"evla_plan": 1, "name": "t", "tokens": {"keep": 8, "after_layer": 1}}' >"$tmp/tokens.json"
  env PYTHONPATH=$pymod:$root/python /usr/bin/python3 $root/python/train/grounding_probe.py --model "$tmp/export" \
    --data "$tmp/demos,$tmp/onpol" --frames 300 --threads 1 --kept-tokens "$tmp/tokens.json" \
    --kept-frames 20 >"$tmp/probe.txt"
  test "$(grep -c "^| $tmp/[a-z]* | .*n=" "$tmp/probe.txt")" = 2
  grep -q "^| $tmp/onpol | $tmp/tokens.json | [0-9.]*% | [0-9.]*% | 12.5% |" "$tmp/probe.txt"
  grep -q "held-out eps-MSE at start" "$tmp/head.log"
  grep -q "features from $tmp/features.npz" "$tmp/head.log"  # the second run reuses the cache
  /usr/bin/python3 - "$root/python" "$tmp" <<'PY'
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from evla_ref import safetensors_io
tmp = sys.argv[2]
a, _ = safetensors_io.read(f"{tmp}/export/model.safetensors")
b, _ = safetensors_io.read(f"{tmp}/head/model.safetensors")
assert a.keys() == b.keys()
head = [k for k in a if k.startswith("action_model.")]
assert head and all(np.array_equal(a[k], b[k]) for k in a if k not in head), "backbone changed"
assert any(not np.array_equal(a[k], b[k]) for k in head), "head unchanged"
assert json.load(open(f"{tmp}/head2/config.json"))["action_head"]["hidden_size"] == 32
d, _ = safetensors_io.read(f"{tmp}/again/model.safetensors")
assert all(np.allclose(b[k], d[k], rtol=1e-5, atol=1e-6) for k in head), "--init-head changed the head"
c, _ = safetensors_io.read(f"{tmp}/top/model.safetensors")
top = head + [k for k in a if k.startswith("llm_backbone.llm.model.layers.11.") or k.endswith("model.norm.weight")]
assert all(np.array_equal(a[k], c[k]) for k in a if k not in top), "layers below the top changed"
m, _ = safetensors_io.read(f"{tmp}/mixed/model.safetensors")
assert all(np.allclose(b[k], m[k], rtol=1e-5, atol=1e-6) for k in b), "--init-model changed the model"
eps = json.loads(safetensors_io.read(f"{tmp}/onpol/shard-00000.safetensors")[1]["episodes"])
assert any(not e["success"] for e in eps) and all(e["labels"] == "expert_takeover" for e in eps), eps
assert np.load(f"{tmp}/onpol.npz")["cog"].shape[0] == sum(e["frames"] for e in eps), "failed episodes left out"
assert any(not np.array_equal(a[k], c[k]) for k in top if k.startswith("llm_")), "top layer unchanged"
PY
  for m in head head2 top aug; do
    "$evla" run -m "$tmp/$m" -i "$root/models/evla-tiny-random/example.png" -p "pick the red cube" \
      --state 0,0,0.1,1 -t 1 | grep -q "action chunk"
  done
fi
if $train --steps 1 --attn-weight 0.3 --attn-layers 0,20 2>"$tmp/err" >/dev/null; then
  echo "--attn-layers accepted a layer the LM does not have"; exit 1
fi
grep -q "attn-layers 0,20: the LM has 12 layers" "$tmp/err"
# `variants` is held out for evaluation: training refuses its episodes.
"$evla" sim gen --split variants --tasks pick --episodes 2 --seed 100000 --size 64 --chunk 16 \
  --out "$tmp/variants" -t 1 >/dev/null 2>&1
if $train --data "$tmp/variants" --steps 1 --aux-weight 1.0 2>"$tmp/err" >/dev/null; then
  echo "training accepted variants data"; exit 1
fi
grep -q "that split is held out for evaluation" "$tmp/err"
# Grounding labels come from where each frame shows the targets: `randomized` data with a
# moved camera (its shards say where) trains beside matching's.
"$evla" sim gen --split randomized --camera-jitter 0.025 --tasks pick --episodes 2 --seed 100000 --size 64 \
  --chunk 16 --out "$tmp/randomized" -t 1 >/dev/null 2>&1
$train --data "$tmp/demos,$tmp/randomized" --steps 1 --attn-weight 0.3 --attn-layers 0 >/dev/null
if "$evla" sim gen --split matching --camera-jitter 0.01 --episodes 1 --out "$tmp/x" -q 2>"$tmp/err" >/dev/null; then
  echo "--camera-jitter accepted on matching"; exit 1
fi
grep -q "camera jitter is for the randomized split only" "$tmp/err"
if "$evla" sim gen --split randomized --camera-jitter 0.05 --episodes 1 --out "$tmp/x" -q 2>"$tmp/err" >/dev/null; then
  echo "--camera-jitter 0.05 accepted"; exit 1
fi
grep -q "outside \[0, 0.025" "$tmp/err"
cd "$root/python/train" && /usr/bin/python3 - "$tmp" <<'PY'
import os, sys
import numpy as np
sys.path.insert(0, "..")
from evla_ref import safetensors_io
from train import load_demos, matching_patches, pixel_patches
# The shards' pixel positions agree with this script's projection of matching's fixed
# camera (the C++ and Python camera models are one), and move with a jittered camera.
tmp = sys.argv[1]
for data, same in ((f"{tmp}/demos", True), (f"{tmp}/randomized", False)):
    r = load_demos(data, 100)
    targets, tg_px = r[3], r[9]
    agree = (pixel_patches(tg_px[:, :2], 64, 64, 8) == matching_patches(targets[:, :3], 64, 8)).mean()
    assert (agree == 1.0) if same else (agree < 1.0), (data, agree)
# Shards written before the pixel tensors existed load beside new ones, their pixels
# projected through the fixed camera: the same as the new shards say.
t, meta = safetensors_io.read(f"{tmp}/demos/shard-00000.safetensors")
os.makedirs(f"{tmp}/old", exist_ok=True)
safetensors_io.write(f"{tmp}/old/shard-00000.safetensors",
                     {k: v for k, v in t.items() if not k.endswith("_image")}, meta)
new, old = load_demos(f"{tmp}/demos", 10 ** 9), load_demos(f"{tmp}/old,{tmp}/randomized", 10 ** 9)
n = len(new[0])
assert old[9].shape == (n + old[11][1], 4) and old[10].shape[1:] == (8, 2), (old[9].shape, old[10].shape)
present = new[8][:, :, 3] > 0  # padding rows: 0, 0 in new shards, projected in old ones (and never used)
assert np.allclose(old[9][:n], new[9], atol=1e-3) and np.allclose(old[10][:n][present], new[10][present], atol=1e-3)
# The camera looks at the table's origin, so points 1-2 cm around it fall in
# the four patches that meet at the centre of a 64-px image (8-px patches).
cells = [divmod(int(matching_patches(np.array([[dx, dy, 0]]), 64, 8)[0]), 8)
         for dx, dy in ((0.01, -0.02), (-0.01, -0.02), (0.01, 0.02), (-0.01, 0.02))]
assert cells == [(4, 4), (4, 3), (3, 4), (3, 3)], cells
# Further right (x > 0): later columns; nearer the camera (y < 0): lower rows.
assert matching_patches(np.array([[0.2, 0, 0]]), 64, 8)[0] % 8 > 4
assert matching_patches(np.array([[0, -0.2, 0]]), 64, 8)[0] // 8 > 4

# The attention loss reads the LM's own attention row of the cognition token:
# recompute that row the way the reference attention does and compare.
import math, torch
import policy as P
torch.manual_seed(0)
size = {"vit_d": 16, "vit_heads": 1, "dit_d": 16, "dit_layers": 1, "dit_heads": 1, "llm_d": 48,
        "llm_heads": 3, "llm_kv": 1, "llm_ffn": 64}
cfg = P.make_config(160, 131, np.zeros(4), np.ones(4), size)
m = P.Trainable(cfg, np.zeros(4), np.ones(4))
P.init_weights(m.policy, 0)
with torch.no_grad():
    for p_ in m.parameters():
        p_ += 0.05 * torch.randn_like(p_)
ids, tl = torch.randint(3, 160, (3, 10)), torch.tensor([10, 7, 9])
cog, (hidden, last) = m.cognition(torch.rand(3, 3, 64, 64), ids, tl, with_hidden=True)
layer = m.policy.llm.model.layers[4]
att, h = layer.self_attn, layer.input_layernorm(hidden[4])
b, n, _ = h.shape
cos, sin = P.rope_tables(n, cfg["llm"], h.dtype)
q = att.q_proj(h).view(b, n, att.nh, att.hd).transpose(1, 2)
k = att.k_proj(h).view(b, n, att.nkv, att.hd).transpose(1, 2)
q, k = q * cos + P.ref.rotate_half(q) * sin, k * cos + P.ref.rotate_half(k) * sin
k = k.repeat_interleave(att.nh // att.nkv, 1)
a = ((q @ k.transpose(-2, -1)) / math.sqrt(att.hd)).masked_fill(
    torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
op, dp, r = torch.tensor([5, 0, 63]), torch.tensor([1, 2, 3]), torch.arange(3)
want = -0.5 * (a[r, 0, last, 1 + op].log().mean() + a[r, 1, last, 1 + dp].log().mean())
got = m.attention_loss(hidden, last, op, dp, [4])
assert abs(float(want) - float(got)) < 1e-5, (float(want), float(got))
# The top layers from a cached layer input (padding zeroed, as the runtime's cache leaves
# it) give cognition()'s feature, from one layer below the top and from three.
llm = m.policy.llm.model
for s in (11, 9):
    x = hidden[s].clone()
    for i, t in enumerate(last):
        x[i, t + 1:] = 0
    again = m.cognition_from_layer(x, last, llm.layers[s:], llm.norm)
    nmse = float(((again - cog) ** 2).sum() / (cog ** 2).sum())
    assert nmse < 1e-10, (s, nmse)
PY
echo "train smoke ok"
