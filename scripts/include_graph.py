"""The module-level include graph of evla: which layer's code includes which.

    /usr/bin/python3 scripts/include_graph.py [--svg docs/img/include_graph.svg]

A module is a folder of src/ (core, kernels, io, model, ...), plus tools/
(the CLI) and python/bindings. An edge A -> B means a file of A includes a
header of B. Prints the edges floor by floor and exits 1 naming the loop if
the graph has one (the suite runs it, so a loop cannot come back unseen).
With --svg it draws the floors bottom-up, each module above everything it
includes.
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/([^"]+)"', re.M)
# The public headers belong to the floor that implements them.
PUBLIC = {"error.h": "core", "image.h": "io", "plan.h": "model", "evla.h": "model"}


def modules():
    out = {}
    src = os.path.join(ROOT, "src")
    for m in sorted(os.listdir(src)):
        if os.path.isdir(os.path.join(src, m)):
            out[m] = os.path.join(src, m)
    out["tools"] = os.path.join(ROOT, "tools")
    out["python"] = os.path.join(ROOT, "python", "bindings")
    return out


def edges(mods):
    graph = {m: set() for m in mods}
    for m, folder in mods.items():
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if not f.endswith((".h", ".cpp")):
                    continue
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    for target, header in INCLUDE.findall(fh.read()):
                        if target == "evla":
                            target = PUBLIC.get(header, "model")
                        if target in mods and target != m:
                            graph[m].add(target)
    return graph


def find_loop(graph):
    state = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state:
                loop = visit(n, path + [n])
                if loop:
                    return loop
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            loop = visit(m, [m])
            if loop:
                return loop
    return None


def floors(graph):
    level = {}

    def depth(m):
        if m not in level:
            level[m] = 1 + max((depth(n) for n in graph[m]), default=-1)
        return level[m]

    for m in graph:
        depth(m)
    return level


def svg(graph, level, path):
    by_floor = {}
    for m, f in level.items():
        by_floor.setdefault(f, []).append(m)
    top = max(by_floor)
    w, h, gap_x, gap_y = 110, 34, 40, 56
    width = max(len(v) for v in by_floor.values()) * (w + gap_x) + gap_x
    height = (top + 1) * (h + gap_y) + gap_y
    pos = {}
    for f, ms in by_floor.items():
        ms.sort()
        row_w = len(ms) * (w + gap_x) - gap_x
        x0 = (width - row_w) / 2
        y = height - gap_y - (f + 1) * (h + gap_y) + gap_y
        for i, m in enumerate(ms):
            pos[m] = (x0 + i * (w + gap_x), y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="13">',
           '<defs><marker id="a" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto">'
           '<path d="M0,0 L8,4 L0,8 z" fill="#777"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    for m in sorted(graph):
        for n in sorted(graph[m]):
            if n == "core" and level[m] > 1:  # every module uses core: drawn from floor 1 only
                continue
            (x1, y1), (x2, y2) = pos[m], pos[n]
            x1, y1, x2 = x1 + w / 2, y1 + h, x2 + w / 2
            # An edge that skips floors bows sideways, so it never runs
            # through the boxes between and reads as theirs.
            bow = (w / 2 + gap_x / 2) * (1 if x2 >= x1 else -1) if level[m] - level[n] > 1 else 0
            mid = (y1 + y2) / 2
            out.append(f'<path d="M{x1:.0f},{y1:.0f} C{x1 + bow:.0f},{mid:.0f} {x2 + bow:.0f},{mid:.0f} {x2:.0f},{y2:.0f}" '
                       'fill="none" stroke="#999" stroke-width="1.2" marker-end="url(#a)"/>')
    for m, (x, y) in pos.items():
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="{w}" height="{h}" rx="6" fill="#e8f0fb" stroke="#4a78b8"/>')
        out.append(f'<text x="{x + w / 2:.0f}" y="{y + h / 2 + 5:.0f}" text-anchor="middle">{m}</text>')
    out.append("</svg>")
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(out) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--svg", help="write the picture here")
    args = ap.parse_args()
    graph = edges(modules())
    loop = find_loop(graph)
    if loop:
        print("include loop: " + " -> ".join(loop))
        return 1
    level = floors(graph)
    for f in sorted(set(level.values()), reverse=True):
        for m in sorted(k for k, v in level.items() if v == f):
            print(f"floor {f}: {m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
    if args.svg:
        svg(graph, level, args.svg)
    print("no include loops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
