#!/usr/bin/python3
"""Checks evla's byte-level BPE tokenizer on a real vocabulary against the
Hugging Face tokenizers library's own ids.

llama.cpp's repository keeps vocabulary files for its tokenizer tests
(models/ggml-vocab-NAME.gguf) and, beside each, test strings (.inp, separated
by "__ggml_vocab_test__" lines) with the ids the tokenizers library gave them
(.out, one line per string, encoded without special tokens). This script
writes the GGUF vocabulary as a tokenizer.json (vocabulary, merges, control
tokens as added tokens, the pre-tokenizer its "tokenizer.ggml.pre" names),
runs `evla tokenize --json --no-special` on the strings and compares; with
--reference, the Python reference (python/evla_ref/bpe.py) too.

    /usr/bin/python3 scripts/check_bpe_vocab.py --evla build/bin/evla models/ggml-vocab-starcoder.gguf

Nothing here downloads; the vocabulary files come from a llama.cpp checkout.
Exit status 1 when any string differs.
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

SEPARATOR = "\n__ggml_vocab_test__\n"

# GGUF value types: (struct format, size) of the scalar ones.
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}

# What each "tokenizer.ggml.pre" name splits by, in tokenizer.json form.
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
PRE_TOKENIZERS = {
    "gpt-2": BYTE_LEVEL,
    "starcoder": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "refact": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL]},
}


def read_gguf_metadata(path):
    """The key/value metadata of a GGUF file (tensors are not read)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise SystemExit(f"{path}: not a GGUF file")
    version, = struct.unpack_from("<I", data, 4)
    if version < 2:
        raise SystemExit(f"{path}: GGUF version {version} is not read here")
    _, n_kv = struct.unpack_from("<QQ", data, 8)
    at = 24

    def string():
        nonlocal at
        n, = struct.unpack_from("<Q", data, at)
        s = data[at + 8:at + 8 + n].decode("utf-8")
        at += 8 + n
        return s

    def value(t):
        nonlocal at
        if t in SCALARS:
            v, = struct.unpack_from(SCALARS[t], data, at)
            at += struct.calcsize(SCALARS[t])
            return v
        if t == 8:
            return string()
        if t == 9:
            et, n = struct.unpack_from("<IQ", data, at)
            at += 12
            return [value(et) for _ in range(n)]
        raise SystemExit(f"{path}: unknown GGUF value type {t}")

    meta = {}
    for _ in range(n_kv):
        key = string()
        t, = struct.unpack_from("<I", data, at)
        at += 4
        meta[key] = value(t)
    return meta


def tokenizer_json(meta, path):
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise SystemExit(f"{path}: tokenizer.ggml.model is {meta.get('tokenizer.ggml.model')!r}, not byte-level BPE")
    pre = meta.get("tokenizer.ggml.pre", "gpt-2")
    if pre not in PRE_TOKENIZERS:
        raise SystemExit(f"{path}: pre-tokenizer {pre!r} is not mapped here (known: {', '.join(PRE_TOKENIZERS)})")
    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type")
    vocab, added = {}, []
    for i, tok in enumerate(tokens):
        kind = types[i] if types else 1
        if kind in (3, 4):  # control, user-defined: added tokens, split out before BPE
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": kind == 4, "special": kind == 3})
        vocab.setdefault(tok, i)
    return {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": PRE_TOKENIZERS[pre],
            "post_processor": None, "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": meta["tokenizer.ggml.merges"]}}, pre


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vocab", nargs="+", help="ggml-vocab-NAME.gguf files, each with its .inp and .out beside it")
    ap.add_argument("--evla", default="build/bin/evla")
    ap.add_argument("--reference", action="store_true", help="also check python/evla_ref/bpe.py (PYTHONPATH=python)")
    args = ap.parse_args()
    failed = False
    for path in args.vocab:
        j, pre = tokenizer_json(read_gguf_metadata(path), path)
        with open(path + ".inp", encoding="utf-8") as f:
            texts = f.read().split(SEPARATOR)
        texts[-1] = texts[-1].removesuffix("\n")
        with open(path + ".out", encoding="utf-8") as f:
            expected = [[int(x) for x in line.split()] for line in f.read().split("\n")[:len(texts)]]
        with tempfile.TemporaryDirectory() as d:
            tj = os.path.join(d, "tokenizer.json")
            with open(tj, "w", encoding="utf-8") as f:
                json.dump(j, f, ensure_ascii=False)
            run = subprocess.run([args.evla, "tokenize", "-t", tj, "--json", "--no-special"],
                                 input=json.dumps(texts), capture_output=True, text=True, check=True)
            results = {"evla": json.loads(run.stdout)}
            if args.reference:
                from evla_ref import bpe
                ref = bpe.Tokenizer(tj)
                results["reference"] = [ref.encode(t, False) for t in texts]
        for who, got in results.items():
            bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
            print(f"{os.path.basename(path)} ({pre}, {len(j['model']['vocab'])} tokens, "
                  f"{len(j['model']['merges'])} merges), {who}: {len(texts) - len(bad)} of {len(texts)} strings match")
            for i in bad[:5]:
                print(f"  {texts[i]!r}: {who} {got[i]} tokenizers {expected[i]}")
            failed |= bool(bad) or len(expected) != len(texts)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
