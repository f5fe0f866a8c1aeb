"""Byte-level BPE in Hugging Face's tokenizer.json format, written independently
of the C++ runtime (src/io/bpe_tokenizer.cpp) to check it.

The runtime splits with ICU's regex engine; this reference walks GPT-2's
pattern by hand over Unicode categories, merges with GPT-2's original
algorithm (every occurrence of the lowest-ranked pair per pass, rather than
one pair at a time through a heap), and matches added tokens by scanning.
It reads the subset its fixtures use: a BPE model, added tokens with lstrip
and rstrip, an NFC/NFKC normalizer or none, a pre-tokenizer of Digits and
ByteLevel steps, and a TemplateProcessing post-processor.
"""
import json
import unicodedata

# Unicode's White_Space property (what \\s matches in ICU and Oniguruma).
WHITE_SPACE = set(map(chr, list(range(0x09, 0x0E)) + [0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B)) +
                      [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]))
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]


def byte_symbols():
    """GPT-2's table: printable Latin-1 bytes stand for themselves, the rest for 256, 257, ..."""
    table, extra = {}, 256
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            table[b] = chr(b)
        else:
            table[b] = chr(extra)
            extra += 1
    return table


BYTE_SYMBOL = byte_symbols()
SYMBOL_BYTE = {v: k for k, v in BYTE_SYMBOL.items()}


def is_letter(c):
    return unicodedata.category(c).startswith("L")


def is_number(c):
    return unicodedata.category(c).startswith("N")


def gpt2_split(text):
    """GPT-2's pre-tokenization pattern, alternative by alternative, at each position."""
    out, i, n = [], 0, len(text)

    def run(j, pred):
        while j < n and pred(text[j]):
            j += 1
        return j

    while i < n:
        c = text[i]
        end = None
        for con in CONTRACTIONS:
            if text.startswith(con, i):
                end = i + len(con)
                break
        if end is None:
            j = i + 1 if c == " " and i + 1 < n else i
            for pred in (is_letter, is_number,
                         lambda ch: ch not in WHITE_SPACE and not is_letter(ch) and not is_number(ch)):
                k = run(j, pred)
                if k > j:
                    end = k
                    break
        if end is None:  # whitespace: a run not followed by a non-space, else the run itself
            k = run(i, lambda ch: ch in WHITE_SPACE)
            if k < n and k - 1 > i:
                end = k - 1
            else:
                end = k
        out.append(text[i:end])
        i = end
    return out


def digits_split(text, individual):
    out = []
    for c in text:
        digit = is_number(c)
        if out and out[-1][1] == digit and not (digit and individual):
            out[-1][0] += c
        else:
            out.append([c, digit])
    return [p for p, _ in out]


class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            j = json.load(f)
        model = j["model"]
        assert model["type"] == "BPE"
        self.vocab = dict(model["vocab"])
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        self.ranks = {}
        for r, pair in enumerate(merges):
            self.ranks.setdefault(pair, r)
        self.unk = model.get("unk_token")
        self.added = sorted(j.get("added_tokens") or [], key=lambda t: -len(t["content"]))
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        for t in self.added:
            self.id_to_token[t["id"]] = t["content"]
        norm = j.get("normalizer")
        norms = norm["normalizers"] if norm and norm["type"] == "Sequence" else [norm] if norm else []
        self.normal_forms = [n["type"] for n in norms]
        pre = j["pre_tokenizer"]
        self.steps = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
        self.prefix, self.suffix = [], []
        post = j.get("post_processor")
        if post and post["type"] == "TemplateProcessing":
            seen_a = False
            for part in post["single"]:
                if "Sequence" in part:
                    seen_a = True
                    continue
                ids = post["special_tokens"][part["SpecialToken"]["id"]]["ids"]
                (self.suffix if seen_a else self.prefix).extend(ids)

    def _bpe(self, piece):
        word = list(piece)
        while len(word) > 1:
            pairs = [(self.ranks.get((a, b), None), a, b) for a, b in zip(word, word[1:])]
            ranked = [p for p in pairs if p[0] is not None]
            if not ranked:
                break
            _, a, b = min(ranked)
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = []
        for w in word:
            if w in self.vocab:
                ids.append(self.vocab[w])
            elif self.unk is not None:
                ids.append(self.vocab[self.unk])
        return ids

    def _plain(self, text):
        for form in self.normal_forms:
            text = unicodedata.normalize(form, text)
        pieces = [text] if text else []
        for step in self.steps:
            nxt = []
            for p in pieces:
                if step["type"] == "Digits":
                    nxt += digits_split(p, step.get("individual_digits", False))
                elif step["type"] == "ByteLevel":
                    if step.get("add_prefix_space", False) and not p.startswith(" "):
                        p = " " + p
                    split = gpt2_split(p) if step.get("use_regex", True) else [p]
                    nxt += ["".join(BYTE_SYMBOL[b] for b in s.encode("utf-8")) for s in split]
                else:
                    raise ValueError("reference: pre-tokenizer %s not covered" % step["type"])
            pieces = nxt
        ids = []
        for p in pieces:
            ids += self._bpe(p)
        return ids

    def encode(self, text, add_special_tokens=True):
        ids = list(self.prefix) if add_special_tokens else []
        plain, i = 0, 0
        while i < len(text):
            hit = None
            for t in self.added:
                c = t["content"]
                if not text.startswith(c, i):
                    continue
                if t.get("single_word") and ((i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_")) or
                                             (i + len(c) < len(text) and (text[i + len(c)].isalnum() or
                                                                          text[i + len(c)] == "_"))):
                    continue
                start, end = i, i + len(c)
                if t.get("lstrip"):
                    while start > plain and text[start - 1] in " \t\n\r\f\v":
                        start -= 1
                if t.get("rstrip"):
                    while end < len(text) and text[end] in " \t\n\r\f\v":
                        end += 1
                hit = (t["id"], start, end)
                break
            if hit is None:
                i += 1
                continue
            ids += self._plain(text[plain:hit[1]])
            ids.append(hit[0])
            plain = i = hit[2]
        ids += self._plain(text[plain:])
        if add_special_tokens:
            ids += self.suffix
        return ids

    def decode(self, ids):
        added = {t["id"] for t in self.added}
        out, symbols = b"", ""
        for i in ids:
            if i in added:
                out += bytes(SYMBOL_BYTE[s] for s in symbols) + self.id_to_token[i].encode("utf-8")
                symbols = ""
            else:
                symbols += self.id_to_token[i]
        return (out + bytes(SYMBOL_BYTE[s] for s in symbols)).decode("utf-8", errors="replace")
