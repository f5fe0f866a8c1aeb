#!/usr/bin/env python3
"""Deliberate bugs, one at a time, to show the test suite catches each.

    python3 scripts/mutation_check.py [--only ID,...] [--out docs/data/mutations.md]

Copies the working tree (git ls-files) to a scratch directory, builds it once
and runs the suite to see it pass, then for each mutation below: changes one
line, rebuilds, runs the suite (ctest, without the Python, training, install
and serving tests, which do not exercise the changed code), records which
tests failed, and restores the line. Prints a Markdown table of the results
and, for a full run (or to --out), writes it to docs/data/mutations.md (a
data file; docs/architecture.md quotes it). Exits 1 if any mutation survived
or did not compile. About a minute per mutation on 2 cores, after a first build of
about ten.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# (id, file, exact text, replacement, what the bug does). The text must occur once.
MUTATIONS = [
    ("visual-tokens-from-0", "src/model/policy.cpp", "SequenceLayout{1, nv}", "SequenceLayout{0, nv}",
     "visual tokens counted from position 0: the BOS token is scored and selected as an image token"),
    ("cache-never-filled", "src/model/dit.cpp",
     "const bool keep = (cache.interval > 1 && block_cached(cache, int(i))) || sublayers_wanted;",
     "const bool keep = sublayers_wanted;",
     "the action-head cache is never filled, so cache plans run uncached"),
    ("cache-wrong-steps", "src/model/schedule.cpp", "(step - c.start) % c.interval == 0",
     "(step - c.start) % c.interval == 1", "the cache refreshes on the wrong steps"),
    ("adaptive-cache-bound", "src/model/dit.cpp", "s.since_refresh < cache.interval;",
     "s.since_refresh <= cache.interval;", "the adaptive cache reuses one step past its interval"),
    ("cache-blocks-ignored", "src/model/dit.cpp",
     "return cache.blocks.empty() || std::find(cache.blocks.begin(), cache.blocks.end(), b) != cache.blocks.end();",
     "return true;", "a cache limited to some blocks reuses every block"),
    ("select-after-wrong-layer", "src/model/schedule.cpp", "sc.select_after = t.after_layer - 1;",
     "sc.select_after = t.after_layer;", "tokens are selected one layer late"),
    ("positions-renumbered", "src/model/llama.cpp", "s.pos_next[size_t(r)] = positions[size_t(src)];",
     "s.pos_next[size_t(r)] = r;", "kept tokens lose their original positions (RoPE renumbered)"),
    ("kept-tokens-unsorted", "src/model/token_select.cpp", "  std::sort(kept.begin(), kept.end());\n", "\n",
     "kept tokens left in score order instead of sequence order"),
    ("diversity-inverted", "src/model/token_select.cpp", "diversity[r] = float(1.0 - max_cos);",
     "diversity[r] = float(max_cos);", "the diversity term keeps the tokens most similar to the key set"),
    ("relevance-from-visual-rows", "src/model/token_select.cpp",
     "std::max(a.T - 1, visual_end) : visual_end;", "std::max(a.T - 1, visual_end) : visual_begin;",
     "text-to-visual relevance also summed over the visual tokens' own queries"),
    ("attention-drop-ignored", "src/model/schedule.cpp", "ls.attn = lp.attn && shape.attn;",
     "ls.attn = shape.attn;", "a plan's dropped attention sub-layer still runs"),
    ("mlp-drop-ignored", "src/model/schedule.cpp", "ls.mlp = lp.mlp && shape.mlp;", "ls.mlp = shape.mlp;",
     "a plan's dropped MLP sub-layer still runs"),
    ("mlp-channels-shifted", "src/model/mlp_compact.cpp", "row[size_t(channels[i])]", "row[size_t(i)]",
     "MLP compaction takes the first down-projection columns instead of the kept channels'"),
    ("int8-weight-scale", "src/kernels/linear.cpp", "mx / 127.0f", "mx / 128.0f",
     "int8 weight scales one level off"),
    ("int8-zero-point", "src/kernels/gemm_int8_dynamic.cpp", "std::lrint(-lo / s)", "std::lrint(lo / s)",
     "int8 activations quantized with the wrong zero point"),
    ("ddim-last-step", "src/model/sampler.cpp", "acp[s.timesteps[i + 1]] : 1.0", "acp[s.timesteps[i + 1]] : acp[0]",
     "the last DDIM step does not land on ᾱ = 1"),
    ("cfg-swapped", "src/model/sampler.cpp", "eps[n + i] + cfg.cfg_scale * (eps[i] - eps[n + i])",
     "eps[i] + cfg.cfg_scale * (eps[n + i] - eps[i])", "classifier-free guidance pushes toward the unconditional"),
    ("rope-sign", "src/kernels/elementwise.cpp", "sin[size_t(t) * half + j] = std::sin(ang);",
     "sin[size_t(t) * half + j] = -std::sin(ang);", "rotary embedding rotates the other way"),
]

CTEST_EXCLUDE = r"^(python|train|install|serve|fuzz)\."


def run(cmd, cwd, timeout=None):
    return subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           stdout=subprocess.PIPE, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = os.path.join(ROOT, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, f))
    # Tests that read ../shared (the tiny Llamas) find it beside the copy.
    shared = os.path.join(os.path.dirname(ROOT), "shared")
    if os.path.isdir(shared) and not os.path.exists(os.path.join(os.path.dirname(dst), "shared")):
        os.symlink(shared, os.path.join(os.path.dirname(dst), "shared"))


def suite(build):
    """Runs the suite; returns (passed, names of the failed tests)."""
    r = run(["ctest", "-j2", "-E", CTEST_EXCLUDE, "--timeout", "300"], build, timeout=3600)
    # ctest lists them after this line (skipped tests are listed elsewhere).
    listed = r.stdout.split("The following tests FAILED:", 1)[1] if "The following tests FAILED:" in r.stdout else ""
    failed = re.findall(r"^\s*\d+ - (\S+) \(", listed, re.M)
    return r.returncode == 0, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--out", help="the Markdown table (default: docs/data/mutations.md for a full run; "
                                  "a run with --only writes none unless given one)")
    args = ap.parse_args()
    if args.out is None and not args.only:
        args.out = os.path.join(ROOT, "docs", "data", "mutations.md")
    chosen = [m for m in MUTATIONS if not args.only or m[0] in args.only.split(",")]
    if not chosen:
        sys.exit(f"no mutation matches --only {args.only}")
    scratch = tempfile.mkdtemp(prefix="evla-mutation-")
    src = os.path.join(scratch, "evla")
    copy_tree(src)
    build = os.path.join(src, "build")
    for m in chosen:  # every mutation must apply to today's code
        text = open(os.path.join(src, m[1]), encoding="utf-8").read()
        if text.count(m[2]) != 1:
            sys.exit(f"mutation {m[0]}: the text occurs {text.count(m[2])} times in {m[1]}, not once")
    print(f"building a copy in {src}", flush=True)
    r = run(["cmake", "-S", src, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release"], src)
    if r.returncode or run(["ninja"], build).returncode:
        sys.exit("the unmutated copy does not build")
    ok, failed = suite(build)
    if not ok:
        sys.exit(f"the unmutated suite fails: {failed}")
    rows, survived, broken = [], 0, 0
    for mid, path, old, new, what in chosen:
        full = os.path.join(src, path)
        original = open(full, encoding="utf-8").read()
        t0 = time.time()
        try:
            open(full, "w", encoding="utf-8").write(original.replace(old, new))
            # A mutation that does not compile shows nothing about the tests:
            # it is reported as such and fails the run (the script needs mending).
            compiles = run(["ninja"], build).returncode == 0
            failed = suite(build)[1] if compiles else []
        finally:
            open(full, "w", encoding="utf-8").write(original)
        result = "caught" if failed else "**survived**" if compiles else "**does not compile**"
        survived += compiles and not failed
        broken += not compiles
        shown = ", ".join(f"`{f}`" for f in failed[:4]) + (f" and {len(failed) - 4} more" if len(failed) > 4 else "")
        rows.append(f"| `{mid}` | {what} | `{path}` | {result} | {len(failed)} | {shown} |")
        print(f"{mid}: {result.strip('*')} ({len(failed)} failing tests, {time.time() - t0:.0f} s)", flush=True)
    run(["ninja"], build)  # leave the copy as it was
    caught = len(chosen) - survived - broken
    text = ("<!-- written by scripts/mutation_check.py; do not edit -->\n"
            f"{caught} of {len(chosen)} deliberate bugs caught"
            + (f"; {broken} did not compile" if broken else "") + ".\n\n"
            "| mutation | the bug | file | result | failing tests | first of them |\n"
            "|---|---|---|---|---:|---|\n" + "\n".join(rows) + "\n")
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        if os.path.exists(args.out) and "written by scripts/mutation_check.py" not in open(args.out).read(200):
            sys.exit(f"{args.out} was not written by this script; not overwriting it")
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 1 if survived or broken else 0


if __name__ == "__main__":
    sys.exit(main())
