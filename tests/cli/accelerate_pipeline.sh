#!/usr/bin/env bash
# analyze → plan → info/run/eval with the plan → prune → the pruned model runs.
set -euo pipefail
evla=$1 model=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$evla" analyze -m "$model" --episodes 4 --every 5 -o "$tmp/an.json" -t 1 2>/dev/null | grep -q "least important blocks first"
test -s "$tmp/an.svg"
grep -q "<svg" "$tmp/an.svg"
"$evla" plan -a "$tmp/an.json" -m "$model" --drop-layers 1 --mlp-prune 0.25 --tokens 6 --token-after 1 \
  --cache-interval 5 -o "$tmp/plan.json" | grep -q "estimated speed-up"
"$evla" info -m "$model" --plan "$tmp/plan.json" | grep -q "GFLOPs plan"
# Tokens ranked by the cognition token's attention: written to the plan, and it runs.
"$evla" plan -a "$tmp/an.json" -m "$model" --tokens 6 --token-after 1 --token-queries cognition \
  -o "$tmp/cogq.json" >/dev/null
grep -q '"queries": "cognition"' "$tmp/cogq.json"
"$evla" eval -m "$model" --plan "$tmp/cogq.json" -n 2 --tasks pick -q | grep -q "overall"
# Tokens merged instead of dropped: written to the plan, and it runs.
"$evla" plan -a "$tmp/an.json" -m "$model" --tokens 6 --token-after 1 --token-merge -o "$tmp/merge.json" >/dev/null
grep -q '"merge": true' "$tmp/merge.json"
"$evla" eval -m "$model" --plan "$tmp/merge.json" -n 2 --tasks pick -q | grep -q "overall"
# --layer-choice cognition drops the block least important for the cognition token.
"$evla" plan -a "$tmp/an.json" -m "$model" --drop-layers 1 --layer-choice cognition -o "$tmp/cog.json" >/dev/null
/usr/bin/python3 - "$tmp/an.json" "$tmp/cog.json" <<'PY'
import json, sys
a, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
scores = [layer["cognition"] for layer in a["llm_importance"]]
assert p["llm"]["drop_blocks"] == [min(range(len(scores)), key=scores.__getitem__)], (scores, p["llm"])
PY
# --layer-choice ablation: the block whose skipping moves the actions least.
"$evla" plan -a "$tmp/an.json" -m "$model" --drop-layers 1 --layer-choice ablation -o "$tmp/abl.json" >/dev/null
/usr/bin/python3 - "$tmp/an.json" "$tmp/abl.json" <<'PY'
import json, sys
a, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
scores = [layer["ablation"] for layer in a["llm_importance"]]
assert all(s > 0 for s in scores), scores  # every block changes the actions of a random model
assert p["llm"]["drop_blocks"] == [min(range(len(scores)), key=scores.__getitem__)], (scores, p["llm"])
PY
# --layer-choice greedy: the first block of the greedy joint-ablation order.
"$evla" plan -a "$tmp/an.json" -m "$model" --drop-layers 1 --layer-choice greedy -o "$tmp/greedy.json" >/dev/null
/usr/bin/python3 - "$tmp/an.json" "$tmp/greedy.json" <<'PY'
import json, sys
a, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
order = a["greedy_drop_order"]
assert len(order) == len(a["llm_importance"]) // 2, order
assert p["llm"]["drop_blocks"] == [order[0]], (order, p["llm"])
PY
# --token-after auto: the layer whose token selection moved the actions least in the analysis.
"$evla" plan -a "$tmp/an.json" -m "$model" --tokens 6 --token-after auto -o "$tmp/auto.json" >/dev/null
/usr/bin/python3 - "$tmp/an.json" "$tmp/auto.json" "$tmp/long.json" <<'PY'
import json, sys
a, p = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
nmse = a["token_after_nmse"]
assert len(nmse) == max(1, len(a["llm_importance"]) // 2) and all(v > 0 for v in nmse), nmse
assert p["tokens"]["after_layer"] == 1 + min(range(len(nmse)), key=nmse.__getitem__), (nmse, p["tokens"])
a["token_after_nmse"] = [0.1] * len(a["llm_importance"])  # a selection after the last layer cannot exist
json.dump(a, open(sys.argv[3], "w"))
PY
if "$evla" plan -a "$tmp/long.json" -m "$model" --tokens 6 --token-after auto -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "token_after_nmse has 3 entries" "$tmp/err"
if "$evla" plan -a "$tmp/an.json" -m "$model" --tokens 6 --token-after 0 -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "a layer count of at least 1, or auto" "$tmp/err"
# --builder ladder: --target-speedup climbs the ladder: the int8 LM first where the analysis measured it faster,
# then the action head every second step, then layers and tokens; an unreachable target is refused.
/usr/bin/python3 - "$tmp/an.json" "$tmp/fast8.json" "$tmp/slow8.json" "$tmp/fast16.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
assert a["int8_llm_ratio"] > 0, a["int8_llm_ratio"]
assert all(v > 0 for v in a["bf16_ratio"].values()), a["bf16_ratio"]
# Module times as this fixture measures them on an idle machine: the ladder's
# choice must not depend on what else the machine was running during analyze.
a["dense_ms"] = {"vision": 0.023, "projector": 0.002, "llm": 0.093, "action_head": 0.149, "total": 0.267}
a["bf16_ratio"] = {"vision": 1.0, "projector": 1.0, "action_head": 1.0}
a["int8_llm_ratio"] = 0.5
json.dump(a, open(sys.argv[2], "w"))
a["int8_llm_ratio"] = 1.0
json.dump(a, open(sys.argv[3], "w"))
a["bf16_ratio"] = {"vision": 0.6, "projector": 1.0, "action_head": 0.6}
json.dump(a, open(sys.argv[4], "w"))
PY
"$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 1.01 --builder ladder -o "$tmp/t1.json" | grep -q "estimated speed-up"
"$evla" plan -a "$tmp/slow8.json" -m "$model" --target-speedup 1.01 --builder ladder -o "$tmp/t2.json" >/dev/null
"$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 1.6 --builder ladder -o "$tmp/t3.json" >"$tmp/t3.out"
# Where the analysis measured BF16 products faster for the modules around the LM, the first rung has them.
"$evla" plan -a "$tmp/fast16.json" -m "$model" --target-speedup 1.2 --builder ladder -o "$tmp/t4.json" >/dev/null
/usr/bin/python3 - "$tmp/t1.json" "$tmp/t2.json" "$tmp/t3.json" "$tmp/t3.out" "$tmp/t4.json" <<'PY'
import json, re, sys
t1, t2, t3 = (json.load(open(f)) for f in sys.argv[1:4])
t4 = json.load(open(sys.argv[5]))
assert "precision" not in t1, t1
assert t4["precision"] == {"vision": "bf16", "projector": "bf16", "action_head": "bf16"}, t4
assert "cache" not in t4 and "llm" not in t4, t4  # BF16 modules alone reach 1.2× here
assert t1["name"] == "target-1.01x" and t1["llm"]["int8_layers"] == [0, 1, 2], t1
assert "cache" not in t1 and "tokens" not in t1 and not t1["llm"]["drop_blocks"], t1
assert t2["cache"]["interval"] == 2 and "int8_layers" not in t2.get("llm", {}), t2
assert t3["cache"]["interval"] in (2, 5) and t3["llm"]["int8_layers"], t3
assert float(re.search(r"estimated speed-up ([0-9.]+)", open(sys.argv[4]).read()).group(1)) >= 1.6
PY
if "$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 50 --builder ladder -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "no plan on the ladder reaches" "$tmp/err"
if "$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 50 -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "no plan reaches an estimated 50" "$tmp/err"
# The search (the default builder): a plan at the target, its front written, the same plan for the same seed.
for i in 1 2; do
  "$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 2 --search-budget 8 --calibration-episodes 2 \
    --calibration-samples 8 --front "$tmp/front$i.json" -o "$tmp/s$i.json" >"$tmp/s$i.out"
done
cmp "$tmp/s1.json" "$tmp/s2.json"
grep -q "^chosen (the lowest action NMSE on 8 validation frames" "$tmp/s1.out"
/usr/bin/python3 - "$tmp/s1.json" "$tmp/front1.json" "$tmp/s1.out" <<'PY'
import json, re, sys
plan, front = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert plan["name"] == "search-2.00x", plan["name"]
assert front and all(p["estimated_speedup"] >= 2 for p in front), front
assert [p["estimated_speedup"] for p in front] == sorted((p["estimated_speedup"] for p in front), reverse=True), front
assert float(re.search(r"estimated speed-up ([0-9.]+)", open(sys.argv[3]).read()).group(1)) >= 2
PY
# --validate-episodes: the finalists in closed loop, paired against the first.
"$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 2 --search-budget 8 --calibration-episodes 2 \
  --calibration-samples 8 --validate-episodes 4 -o "$tmp/v.json" | grep -q "^closed loop, 4 matching episodes"
"$evla" plan -a "$tmp/fast8.json" -m "$model" --score "$tmp/s1.json,$tmp/t1.json" --calibration-episodes 2 \
  --calibration-samples 8 | grep -q "| $tmp/t1.json | "
if "$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 1.5 --drop-layers 2 -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "give either it or those numbers" "$tmp/err"
if "$evla" plan -a "$tmp/fast8.json" -m "$model" --target-speedup 1 -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "must be above 1" "$tmp/err"
# --measure climbs on timings taken here (which plan it lands on depends on the machine: only that it runs).
"$evla" plan -a "$tmp/an.json" -m "$model" --target-speedup 1.01 --builder ladder --measure 3 -o "$tmp/m.json" | grep -q "measured speed-up"
"$evla" info -m "$model" --plan "$tmp/m.json" | grep -q "GFLOPs plan"
if "$evla" plan -a "$tmp/an.json" -m "$model" --measure 3 -o "$tmp/x.json" 2>"$tmp/err"; then exit 1; fi
grep -q "needs --target-speedup" "$tmp/err"
"$evla" eval -m "$model" --plan "$tmp/t3.json" -n 2 --tasks pick -q | grep -q "overall"
"$evla" eval -m "$model" --plan "$tmp/plan.json" -n 2 --tasks pick -q | grep -q "overall"
"$evla" prune -m "$model" --plan "$tmp/plan.json" -o "$tmp/pruned" | grep -q "LM layers 3 → 2"
"$evla" eval -m "$tmp/pruned" --plan "$tmp/pruned/plan.json" -n 2 --tasks pick -q | grep -q "overall"
# A bad plan is refused with its reason.
echo '{"evla_plan": 1, "cache": {"interval": 0}}' > "$tmp/bad.json"
if "$evla" info -m "$model" --plan "$tmp/bad.json" 2>"$tmp/err"; then exit 1; fi
grep -q "cache.interval: must be ≥ 1" "$tmp/err"
echo "accelerate pipeline ok"
