#!/usr/bin/env python3
"""Runs an evla command and checks its exit code, a regular expression over
its output and, with --check, the values it printed (CTest's
PASS_REGULAR_EXPRESSION ignores the exit code and sees only text).

usage: expect.py [--code N] [--regex R] [--check NAME] -- COMMAND...
"""
import argparse
import json
import math
import re
import subprocess
import sys

ROW = re.compile(r"^\s+(\d+):((?: [+-]\d+\.\d{4})+)$", re.M)


def fail(msg, output=""):
    print("FAIL: " + msg + ("\noutput:\n" + output[-3000:] if output else ""))
    sys.exit(1)


def check_chunk(cmd, out):
    """The text chunk: 16 × 7 finite numbers, not all zero, equal to the --json run's."""
    rows = [[float(v) for v in m.group(2).split()] for m in ROW.finditer(out)]
    if len(rows) != 16 or any(len(r) != 7 for r in rows):
        fail(f"expected 16 rows of 7 actions, got {[len(r) for r in rows]}", out)
    flat = [v for r in rows for v in r]
    if not all(math.isfinite(v) for v in flat) or not any(flat):
        fail("actions not finite or all zero", out)
    j = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True).stdout)
    for s, (text_row, json_row) in enumerate(zip(rows, j["actions"])):
        for a, b in zip(text_row, json_row):
            if abs(a - b) > 0.00006:
                fail(f"step {s}: text {text_row} vs JSON {json_row}", out)


def check_json_chunk(cmd, out):
    j = json.loads(out)
    acts = j["actions"]
    if (j["horizon"], j["dim"]) != (len(acts), len(acts[0])) or len(acts) < 1:
        fail("horizon/dim do not match the actions", out)
    flat = [v for r in acts for v in r]
    if not all(isinstance(v, float) and math.isfinite(v) for v in flat) or not any(flat):
        fail("actions not finite or all zero", out)
    if not j["timing_ms"]["total"] > 0:
        fail("no total time", out)


def check_bench(cmd, out):
    m = re.search(r"^\| dense \| 1 \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|", out, re.M)
    if not m:
        fail("no dense row", out)
    lo, p50, p90 = map(float, m.groups())
    if not (0 < lo <= p50 <= p90):
        fail(f"timings out of order: min {lo}, p50 {p50}, p90 {p90}", out)


def check_eval(cmd, out):
    tasks = re.findall(r"^\| (pick|close_drawer) \| (\d+) \| ([0-9.]+)% \|", out, re.M)
    overall = re.search(r"^\| overall \| (\d+) \| ([0-9.]+)% \|", out, re.M)
    if len(tasks) != 2 or not overall or int(overall.group(1)) != 4:
        fail("expected pick and close_drawer rows and 4 episodes overall", out)
    if sum(int(t[1]) for t in tasks) != 4 or not 0 <= float(overall.group(2)) <= 100:
        fail("per-task episodes do not add up to 4, or a rate outside [0, 100]", out)


def check_sim_expert(cmd, out):
    rows = re.findall(r"^\| (\w+) \| 10 \| ([0-9.]+)% \|", out, re.M)
    if len(rows) != 5:
        fail(f"expected 5 task rows of 10 episodes, got {rows}", out)
    low = [(t, r) for t, r in rows if float(r) < 80]
    if low:
        fail(f"the scripted expert solves under 80% of: {low}", out)


CHECKS = {"chunk": check_chunk, "json_chunk": check_json_chunk, "bench": check_bench, "eval": check_eval,
          "sim_expert": check_sim_expert}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", type=int, default=0)
    ap.add_argument("--regex", default=None)
    ap.add_argument("--check", choices=sorted(CHECKS), default=None)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=280)
    out = p.stdout + p.stderr
    if p.returncode != a.code:
        fail(f"exit code {p.returncode}, expected {a.code}", out)
    if a.regex is not None and not re.search(a.regex, out, re.S):
        fail(f"no match for {a.regex!r}", out)
    if a.check:
        CHECKS[a.check](cmd, p.stdout if a.check == "json_chunk" else out)
    print("ok")


if __name__ == "__main__":
    main()
