#!/usr/bin/env python3
"""Runs one case of tests/cli/bad_inputs.txt (or all of them): the command,
then its exit code, the words its output must contain, and what a bad command
must never do: time out, leave files in its scratch directory, or change a
model directory it was given.

usage: bad_inputs.py EVLA SOURCE_DIR [CASE]
"""
import hashlib
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

TIMEOUT_S = 120


def tree_hash(path):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_safetensors(path, header, body):
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


class Fixtures:
    """Model copies and files a case names as @name@, made on first use."""

    def __init__(self, src, scratch):
        self.src, self.scratch, self.made, self.models = src, scratch, {}, []
        self.tiny = os.path.join(src, "models/evla-tiny-random")

    def model(self, name, edit_config=None, edit_weights=None):
        d = os.path.join(self.scratch, name)
        shutil.copytree(self.tiny, d)
        if edit_config:
            with open(os.path.join(d, "config.json")) as f:
                c = json.load(f)
            text = edit_config(c)
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(text if isinstance(text, str) else json.dumps(c))
        if edit_weights:
            header, body = read_safetensors(os.path.join(d, "model.safetensors"))
            header, body = edit_weights(header, bytearray(body))
            write_safetensors(os.path.join(d, "model.safetensors"), header, bytes(body))
        return d

    def file(self, name, text):
        p = os.path.join(self.scratch, name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def binary(self, name, data):
        p = os.path.join(self.scratch, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def get(self, name):
        if name in self.made:
            return self.made[name]
        deep = "[" * 1000000 + "]" * 1000000
        makers = {
            "tiny_copy": lambda: self.model("tiny_copy"),
            "deep_config": lambda: self.model("deep_config", lambda c: '{"llm": ' + deep + "}"),
            "eps_negative": lambda: self.model("eps_negative", lambda c: c["llm"].update(rms_norm_eps=-1)),
            "train_steps_huge": lambda: self.model(
                "train_steps_huge", lambda c: c["action_head"].update(train_steps=10**9, sample_steps=10)),
            "image_size_huge": lambda: self.model(
                "image_size_huge", lambda c: [e.update(image_size=10**6) for e in c["vision"]["encoders"]]),
            "no_prompt_section": lambda: self.model("no_prompt_section", lambda c: c.pop("prompt")),
            "nan_weights": lambda: self.model("nan_weights", edit_weights=nan_weights),
            "offsets_past_end": lambda: self.model("offsets_past_end", edit_weights=offsets_past_end),
            "plan_deep": lambda: self.file("plan_deep.json", '{"evla_plan": 1, "name": ' + deep + "}"),
            "plan_typo": lambda: self.file(
                "plan_typo.json", '{"evla_plan": 1, "llm": {"num_layers": 4, "drop_block": [1]}}'),
            "plan_drops_all": lambda: self.file(
                "plan_drops_all.json", '{"evla_plan": 1, "llm": {"num_layers": 4, "drop_blocks": [0, 1, 2, 3]}}'),
            "plan_dense": lambda: self.file("plan_dense.json", '{"evla_plan": 1, "name": "dense"}'),
            "long_prompt": lambda: "pick up the can and " * 5000,
            "grey_alpha_png": lambda: self.binary("grey_alpha.png", grey_alpha_png(64, 64)),
        }
        value = makers[name]()
        if os.path.isdir(value):
            self.models.append(value)
        self.made[name] = value
        return value


def grey_alpha_png(w, h):
    """An 8-bit grey + alpha PNG, written with zlib (no imaging library needed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 4 % 256, 255)) for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 4, 0, 0, 0)  # depth 8, colour type 4 (grey + alpha)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def nan_weights(header, body):
    for name, t in header.items():
        if name.endswith("final_layer.linear.bias"):
            b, e = t["data_offsets"]
            body[b:e] = struct.pack("<f", float("nan")) * ((e - b) // 4)
            return header, body
    raise SystemExit("no final_layer.linear.bias in the tiny model")


def offsets_past_end(header, body):
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    b, e = header[last]["data_offsets"]
    header[last]["data_offsets"] = [b + 4096, e + 4096]
    return header, body


def parse_table(path):
    cases = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, code, words, command = (part.strip() for part in line.rstrip("\n").split("|", 3))
            cases.append((name, int(code), [w.strip() for w in words.split(";") if w.strip()], command))
    return cases


def run_case(evla, src, case):
    name, code, words, command = case
    scratch = tempfile.mkdtemp(prefix="evla_bad_")
    out_dir = os.path.join(scratch, "out")
    os.mkdir(out_dir)
    try:
        fx = Fixtures(src, scratch)
        subst = {"TINY": fx.tiny, "SIMFIX": os.path.join(src, "tests/fixtures/sim_random"),
                 "TABLETOP": os.path.join(src, "models/evla-tabletop"), "SRC": src, "OUT": out_dir}
        argv, env = [], dict(os.environ)
        for tok in shlex.split(command):
            for key, value in subst.items():
                tok = tok.replace("@" + key + "@", value)
            while "@" in tok:
                a = tok.index("@")
                b = tok.index("@", a + 1)
                tok = tok[:a] + fx.get(tok[a + 1:b]) + tok[b + 1:]
            if not argv and "=" in tok and tok.split("=")[0].isupper():
                env[tok.split("=")[0]] = tok.split("=", 1)[1]
            else:
                argv.append(tok)
        before = {m: tree_hash(m) for m in fx.models}
        try:
            p = subprocess.run([evla] + argv, capture_output=True, text=True, errors="replace",
                               timeout=TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            return [f"timed out after {TIMEOUT_S} s"]
        output = p.stdout + p.stderr
        problems = []
        if p.returncode != code:
            problems.append(f"exit code {p.returncode}, expected {code}")
        problems += [f"no '{w}' in the output" for w in words if w not in output]
        if code != 0 and os.listdir(out_dir):
            problems.append(f"a failed command left files: {os.listdir(out_dir)}")
        problems += [f"{m} was changed" for m in fx.models if tree_hash(m) != before[m]]
        if problems:
            problems.append("output: " + output[-2000:])
        return problems
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    evla, src = sys.argv[1], sys.argv[2]
    cases = parse_table(os.path.join(src, "tests/cli/bad_inputs.txt"))
    wanted = sys.argv[3] if len(sys.argv) > 3 else None
    chosen = [c for c in cases if wanted in (None, c[0])]
    if not chosen:
        raise SystemExit(f"no case named {wanted}")
    failed = 0
    for case in chosen:
        problems = run_case(evla, src, case)
        if problems:
            failed += 1
            print(f"FAIL {case[0]}: {case[3]}\n  " + "\n  ".join(problems))
        else:
            print(f"ok   {case[0]}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
