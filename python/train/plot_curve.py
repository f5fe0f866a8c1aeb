#!/usr/bin/python3
"""Closed-loop success against training step, as an SVG (no plotting library needed).

    /usr/bin/python3 python/train/plot_curve.py curve.tsv --out docs/img/training_curve.svg

curve.tsv: one line per evaluated checkpoint, "step<TAB>success%" (e.g. `12.0%`, as
`evla eval` prints it); lines may carry a note after a second tab.
"""
import argparse
import re


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tsv")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="evla-tabletop: matching success during training")
    args = ap.parse_args()
    pts = []
    for line in open(args.tsv):
        parts = line.rstrip("\n").split("\t")
        if len(parts) >= 2 and parts[0].strip().isdigit():
            pts.append((int(parts[0]), float(re.sub(r"[^0-9.]", "", parts[1].split("%")[0]))))
    pts.sort()
    W, H, L, R, T, B = 640, 320, 60, 20, 40, 50
    xmax = max(p[0] for p in pts) * 1.05
    ymax = max(100.0, max(p[1] for p in pts))
    X = lambda s: L + (W - L - R) * s / xmax
    Y = lambda v: H - B - (H - T - B) * v / ymax
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">{args.title}</text>']
    for v in range(0, int(ymax) + 1, 20):
        out.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v}%</text>')
    step = 10 ** max(0, len(str(int(xmax))) - 1)
    for s in range(0, int(xmax) + 1, step):
        out.append(f'<text x="{X(s):.1f}" y="{H - B + 16}" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">optimizer step (batch 16)</text>')
    out.append(f'<line x1="{L}" y1="{Y(85):.1f}" x2="{W - R}" y2="{Y(85):.1f}" stroke="#c33" stroke-dasharray="5,4"/>')
    out.append(f'<text x="{W - R}" y="{Y(85) - 5:.1f}" text-anchor="end" fill="#c33">target 85%</text>')
    path = " ".join(f"{X(s):.1f},{Y(v):.1f}" for s, v in pts)
    out.append(f'<polyline points="{path}" fill="none" stroke="#2a6" stroke-width="2"/>')
    for s, v in pts:
        out.append(f'<circle cx="{X(s):.1f}" cy="{Y(v):.1f}" r="3.5" fill="#2a6"/>')
    out.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
