#!/usr/bin/python3
"""Where does a training checkpoint lose the task's object? Probes on training frames.

    PYTHONPATH=python /usr/bin/python3 python/train/diagnose.py --ckpt /tmp/evla_train/r12/ckpt.pt \
        --data /tmp/evla_train/demos2 --tokenizer /tmp/evla_train/r12/export/tokenizer.model

Runs on `pick` frames (the task that needs the most precise position) and prints:
  attention  per LM layer and query head, the cognition token's attention mass on the visual
             token showing the object, and how often that token is the argmax;
  tokens     how precisely the object's own visual token knows the object's xy: linear probes
             from the patch index alone, from the token's hidden at --layer, and both;
  cognition  linear probes of the object's xy from the cognition token's residual at the input
             of every LM layer and after the final norm;
  direction  agreement (cosine) between the expert's first four moves and the direction the
             auxiliary head reads out of the cognition feature, on frames ≥ 8 cm from the object.
Probes are least squares fitted on 3/4 of the frames and scored on the rest (median error, share
under 3 cm, the grasp tolerance). Weights: the checkpoint's raw model (`--weights model`) or its
EMA (what is exported). `--svg FILE` also draws the cognition-token probe layer by layer against
the object token's own probe, and the supervised heads' attention on the object.
"""
import argparse

import numpy as np
import torch

import policy as P  # noqa: E402
from train import load_demos, matching_patches, prompt_table  # noqa: E402


def probe_errors(X, y, n_fit):
    """Least-squares linear probe (with bias) fitted on the first n_fit rows; errors on the rest."""
    X = np.concatenate([X, np.ones((len(X), 1))], 1)
    w, *_ = np.linalg.lstsq(X[:n_fit], y[:n_fit], rcond=None)
    return np.linalg.norm(X[n_fit:] @ w - y[n_fit:], axis=1)


def summary(e):
    return f"median {100 * np.median(e):.1f} cm, < 3 cm {np.mean(e < 0.03):.2f}"


def svg(path, title, cog_cm, token_cm, attn_mass):
    """Bars: median error (cm) of the object-xy probe on the cognition token at each LM layer
    input, then after the final norm; a dashed line at the object token's own probe; dots: the
    best head's attention mass on the object's token at each layer (right axis, 0..1)."""
    W, H, L, R, T, B = 680, 320, 56, 56, 40, 56
    n = len(cog_cm)
    ymax = max(max(cog_cm), 1.0) * 1.1
    bw = (W - L - R) / n
    Y = lambda v: H - B - (H - T - B) * v / ymax
    A = lambda v: H - B - (H - T - B) * v
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="13">{title}</text>']
    for v in range(0, int(ymax) + 1, 5):
        out.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{L - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for v in (0, 0.5, 1.0):
        out.append(f'<text x="{W - R + 5}" y="{A(v) + 4:.1f}" fill="#c60">{v:.1f}</text>')
    out.append(f'<text x="14" y="{T + (H - T - B) / 2}" transform="rotate(-90 14 {T + (H - T - B) / 2})" '
               f'text-anchor="middle">object xy probe, median cm</text>')
    for i, v in enumerate(cog_cm):
        x = L + i * bw
        out.append(f'<rect x="{x + 2:.1f}" y="{Y(v):.1f}" width="{bw - 4:.1f}" height="{Y(0) - Y(v):.1f}" fill="#69c"/>')
        label = str(i) if i < n - 1 else "out"
        out.append(f'<text x="{x + bw / 2:.1f}" y="{H - B + 14}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{W / 2}" y="{H - B + 30}" text-anchor="middle">cognition token at the input of LM '
               f'layer … (out: final feature)</text>')
    out.append(f'<line x1="{L}" y1="{Y(token_cm):.1f}" x2="{W - R}" y2="{Y(token_cm):.1f}" stroke="#2a6" '
               f'stroke-dasharray="6,4" stroke-width="2"/>')
    out.append(f'<text x="{L + 6}" y="{Y(token_cm) - 5:.1f}" fill="#2a6">the object\'s own visual token: '
               f'{token_cm:.1f} cm</text>')
    for i, a in enumerate(attn_mass):  # attention of layer i is read at the input of layer i + 1
        out.append(f'<circle cx="{L + (i + 1) * bw:.1f}" cy="{A(a):.1f}" r="4" fill="#c60"/>')
    out.append(f'<text x="{W - R}" y="{H - 8}" text-anchor="end" fill="#c60">dots: attention on the object\'s '
               f'token (best head, right axis), drawn where that layer\'s output enters</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="train.py --ckpt file")
    ap.add_argument("--data", required=True, help="matching demonstrations (the training shards)")
    ap.add_argument("--tokenizer", required=True, help="the run's tokenizer.model")
    ap.add_argument("--weights", default="model", choices=["model", "ema"])
    ap.add_argument("--frames", type=int, default=1600)
    ap.add_argument("--layer", type=int, default=2, help="LM layer input for the token probe")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--svg", default=None, help="also draw the probes to this SVG file")
    args = ap.parse_args()
    torch.set_num_threads(1)

    ck = torch.load(args.ckpt)
    cfg = ck["cfg"]
    weights = ck[args.weights]
    images, states, actions, targets, instr_idx, instructions, *_ = load_demos(args.data, 1500)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    text_ids, text_len = prompt_table(cfg, sp, instructions)
    aux_dim = weights["aux_head.weight"].shape[0] if "aux_head.weight" in weights else 0
    mid = sorted({int(k.split(".")[1]) for k in weights if k.startswith("mid_aux.")})
    m = P.Trainable(cfg, np.zeros(4), np.ones(4), aux_dim=aux_dim, ground="ground_q.weight" in weights,
                    patch_pos="patch_pos.weight" in weights, mid_aux_layers=mid)
    m.load_state_dict(weights, strict=False)
    m.eval()

    words = ("pick", "grasp", "lift")
    pick = np.array([any(w in instructions[i] for w in words) and "drawer" not in instructions[i]
                     for i in instr_idx])
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(np.where(pick)[0], min(args.frames, int(pick.sum())), replace=False)
    enc = cfg["vision"]["encoders"][0]
    patch = matching_patches(targets[idx, :3], enc["image_size"], enc["patch_size"])
    n_fit = 3 * len(idx) // 4

    L = cfg["llm"]["num_hidden_layers"]
    mass = np.zeros((L, cfg["llm"]["num_attention_heads"]))
    hit = np.zeros_like(mass)
    tok, cogs, aux = [], [[] for _ in range(L + 2)], []
    with torch.no_grad():
        for s in range(0, len(idx), 200):
            j = idx[s:s + 200]
            x = torch.from_numpy(images[j]).permute(0, 3, 1, 2).float() / 255
            ii = torch.from_numpy(instr_idx[j])
            cog, (hidden, last) = m.cognition(x, text_ids[ii], text_len[ii], with_hidden=True)
            rows = torch.arange(len(j))
            op = torch.from_numpy(patch[s:s + 200])
            for li in range(L):
                p = m.cognition_attention_logits(hidden, last, li).softmax(-1)
                mass[li] += p[rows, :, 1 + op].sum(0).numpy()
                hit[li] += (p[:, :, 1:1 + enc_tokens(cfg)].argmax(-1) == op[:, None]).float().sum(0).numpy()
            tok.append(hidden[args.layer][rows, 1 + op].numpy())
            for li, hl in enumerate(hidden):
                cogs[li].append(hl[rows, last].numpy())
            cogs[L + 1].append(cog.numpy())
            if aux_dim:
                aux.append(m.aux_head(cog).numpy() * 0.2)

    print(f"{len(idx)} pick frames of {args.data}; weights: {args.weights}; step {ck.get('step')}")
    print("\nattention of the cognition token on the object's visual token (mass / argmax share), per head:")
    for li in range(L):
        print(f"  layer {li:2d}: " + "  ".join(f"{mass[li, h] / len(idx):.2f}/{hit[li, h] / len(idx):.2f}"
                                              for h in range(mass.shape[1])))
    y = targets[idx, :2]
    onehot = np.eye(enc_tokens(cfg))[patch]
    tok = np.concatenate(tok)
    print("\nobject xy from its own visual token:")
    both = probe_errors(np.concatenate([onehot, tok], 1), y, n_fit)
    print(f"  patch index only           {summary(probe_errors(onehot, y, n_fit))}")
    print(f"  token hidden (layer {args.layer} input) {summary(probe_errors(tok, y, n_fit))}")
    print(f"  both                       {summary(both)}")
    print("\nobject xy from the cognition token:")
    cog_err = [probe_errors(np.concatenate(c), y, n_fit) for c in cogs]
    for li, e in enumerate(cog_err):
        name = f"input of layer {li}" if li < L else ("last layer output" if li == L else "final-norm feature")
        print(f"  {name:20s} {summary(e)}")
    if args.svg:
        cog_cm = [100 * np.median(e) for i, e in enumerate(cog_err) if i != L]
        svg(args.svg, f"where the object's position is lost (step {ck.get('step')}, {len(idx)} pick frames)",
            cog_cm, 100 * np.median(both), (mass / len(idx)).max(axis=1))
    if aux_dim:
        aux = np.concatenate(aux)
        off = targets[idx, :2] - states[idx, :2]
        far = np.linalg.norm(off, axis=1) >= 0.08
        e = actions[idx, :4, :2].sum(1)

        def cosine(a, b):
            return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
        print(f"\nexpert's first 4 moves vs direction to the object, {far.sum()} frames >= 8 cm away (cosine):")
        print(f"  true offset                {cosine(e[far], off[far]).mean():.2f}")
        print(f"  auxiliary head's offset    {cosine(e[far], aux[far, 6:8]).mean():.2f}")


def enc_tokens(cfg):
    e = cfg["vision"]["encoders"][0]
    return (e["image_size"] // e["patch_size"]) ** 2


if __name__ == "__main__":
    main()
