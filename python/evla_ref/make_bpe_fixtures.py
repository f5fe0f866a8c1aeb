"""Writes tests/fixtures/bpe/: two byte-level BPE tokenizers in tokenizer.json
form, trained here on a fixed corpus, and what the reference (bpe.py) makes of
a list of hard strings with each.

- smol.json: SmolVLM2's layout: Digits (each digit apart) then ByteLevel
  without a prefix space, merges written "a b", no post-processor, and
  SmolVLM2's special tokens (<|im_start|> ... <image>), one of them with lstrip.
- gpt2.json: GPT-2's ByteLevel with a prefix space, an NFC normalizer, merges
  written ["a", "b"], and a template that puts <|im_start|> first.

    PYTHONPATH=python /usr/bin/python3 -m evla_ref.make_bpe_fixtures tests/fixtures/bpe
"""
import collections
import json
import os
import sys

from . import bpe, tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<global-img>", "<image>"]

EXTRA_TEXT = [
    "The robot moved 3 blocks in 12.5 seconds, then 1,000 more by 2026.",
    "Don't drop it; we'll see if it's fine. They've done it, I'm sure, you'd agree.",
    "def forward(self, x):\n    return x ** 2  # square\n\n\tindented\ttabs",
    "Café, naïve façade, résumé: déjà vu. Ångström über straße.",
    "机器人拿起红色的方块。 ロボットが動く。 로봇이 움직인다.",
    "Emoji 🤖👍🏽 and symbols ±×÷ → ∞ ≈ π.",
    "   leading spaces, trailing spaces   and  double  spaces  ",
]

CASES = [
    "", " ", "  ", "\n", "\n\n", "\t \n ", "pick up the coke can\n", "Pick Up The Coke Can",
    "put the eggplant in the basket", "1234567890", " 42", "3.14159 and 1,000,000", "x2y3z",
    "Hello, world!", "Don't you think it's fine? We'll see, they've said.", "'s'S 'LL",
    "   leading and trailing   ", "multiple     internal   spaces", "tabs\tand\nnewlines\r\nmixed",
    "Café naïve résumé façade Ångström", "e\u0301 combining", "机器人拿起红色的方块。", "ロボット 로봇",
    "Emoji 🤖👍🏽🇺🇸 and ❤️", "Punctuation!!! ??? ... --- (parens) [brackets] {braces}",
    "<|im_start|>user\npick up the can<|im_end|>\n", "<image><image>text<fake_token_around_image>",
    "before   <global-img>after", "<|im_start|><|im_start|>", "<|im_start", "a<|endoftext|>b",
    "zero\u200bwidth and\u00a0nbsp", "\u2028line\u2029para", "ü" * 40, "a" * 200,
    "supercalifragilisticexpialidocious", "def foo(x):\n    return x ** 2  # comment",
]


def train(lines, n_merges, digits):
    """Plain BPE training on byte-level pieces: the most frequent adjacent pair
    first (ties: the pair that sorts first), n_merges times."""
    words = collections.Counter()
    for line in lines:
        pieces = bpe.digits_split(line, True) if digits else [line]
        for p in pieces:
            for w in bpe.gpt2_split(p):
                words[tuple(bpe.BYTE_SYMBOL[b] for b in w.encode("utf-8"))] += 1
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], [-ord(c) for c in kv[0][0] + "\0" + kv[0][1]]))[0]
        merges.append(best)
        new = collections.Counter()
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += n
        words = new
    return merges


def tokenizer_json(merges, smol):
    vocab = {bpe.BYTE_SYMBOL[b]: b for b in range(256)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = []
    for k, content in enumerate(SPECIALS):
        added.append({"id": len(vocab) + k, "content": content, "single_word": False,
                      "lstrip": smol and content == "<global-img>", "rstrip": False, "normalized": False,
                      "special": True})
    byte_level = {"type": "ByteLevel", "add_prefix_space": not smol, "trim_offsets": True, "use_regex": True}
    j = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
         "normalizer": None if smol else {"type": "NFC"},
         "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                                 byte_level]} if smol else byte_level,
         "post_processor": None,
         "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
         "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                   "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                   "vocab": vocab, "merges": [f"{a} {b}" if smol else [a, b] for a, b in merges]}}
    if not smol:
        bos = added[SPECIALS.index("<|im_start|>")]["id"]
        j["post_processor"] = {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                               "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [bos],
                                                                   "tokens": ["<|im_start|>"]}}}
    return j


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    lines = tokenizer.corpus() + EXTRA_TEXT
    result = {"cases": CASES, "tokenizers": {}}
    for name, smol, n_merges in [("smol", True, 700), ("gpt2", False, 500)]:
        path = os.path.join(out_dir, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(train(lines, n_merges, smol), smol), f, ensure_ascii=False, indent=1)
            f.write("\n")
        tok = bpe.Tokenizer(path)
        result["tokenizers"][name] = {
            "with_special": [tok.encode(s, True) for s in CASES],
            "without_special": [tok.encode(s, False) for s in CASES],
        }
    with open(os.path.join(out_dir, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/bpe")
