"""Synthetic tabletop images and a dependency-free PNG writer/reader (no PIL here)."""
import struct
import zlib

import numpy as np


def _chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path, rgb):
    """Writes an [H,W,3] uint8 array as an 8-bit RGB PNG (filter 0, deterministic)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, c = rgb.shape
    assert c == 3
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))
    png = (b"\x89PNG\r\n\x1a\n"
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + _chunk(b"IDAT", zlib.compress(raw, 9))
           + _chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def read_png(path):
    """Reads an 8-bit, non-interlaced RGB/RGBA/gray PNG -> [H,W,3] uint8."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat = 8, b""
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, data = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data)
        elif kind == b"IDAT":
            idat += data
        pos += 12 + n
    channels = {0: 1, 2: 3, 6: 4}.get(ctype)
    if depth != 8 or interlace or channels is None:
        raise ValueError(f"{path}: only 8-bit non-interlaced gray/RGB/RGBA PNGs are supported")
    raw = zlib.decompress(idat)
    stride = w * channels
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ftype = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):  # sequential: each byte depends on its left neighbour
            a = cur[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 0:
                pred = 0
            elif ftype == 1:
                pred = a
            elif ftype == 2:
                pred = b
            elif ftype == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[y], prev = cur, cur
    img = out.reshape(h, w, channels).astype(np.uint8)
    return np.repeat(img, 3, axis=2) if channels == 1 else img[:, :, :3]


def tabletop(size, rng):
    """A size x size RGB scene: wall, wooden table, a block, a bowl, a can and a gripper.

    Object placement and colours vary with `rng` (np.random.RandomState).
    """
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) / s
    img = np.zeros((s, s, 3))
    horizon = 0.3 + 0.1 * rng.rand()
    wall = np.array([0.75, 0.78, 0.82]) * (0.85 + 0.15 * yy[..., None] / horizon)
    wood = np.array([0.55, 0.38, 0.22]) * (0.8 + 0.25 * yy[..., None])
    grain = 0.04 * np.sin(40 * xx + 6 * np.sin(9 * yy))[..., None]
    table = yy[..., None] >= horizon
    img = np.where(table, wood + grain, wall)

    def blob(cx, cy, rx, ry, colour, shade=0.3):
        d = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
        inside = (d <= 1.0)[..., None]
        lit = np.asarray(colour) * (1.0 - shade * (yy - cy + ry) / (2 * ry))[..., None]
        return np.where(inside, lit, img)

    # shadowed block (axis-aligned rectangle)
    bx, by = 0.15 + 0.3 * rng.rand(), horizon + 0.15 + 0.3 * rng.rand()
    block = (np.abs(xx - bx) < 0.08) & (np.abs(yy - by) < 0.07)
    img = np.where(((np.abs(xx - bx - 0.02) < 0.08) & (np.abs(yy - by - 0.03) < 0.07))[..., None],
                   img * 0.6, img)
    colour = [[0.85, 0.12, 0.10], [0.15, 0.6, 0.2], [0.95, 0.8, 0.1]][rng.randint(3)]
    img = np.where(block[..., None], np.asarray(colour) * (1.05 - 0.4 * (yy - by + 0.07))[..., None], img)
    # bowl: dark rim ellipse with lighter inside
    cx, cy = 0.6 + 0.25 * rng.rand(), horizon + 0.2 + 0.3 * rng.rand()
    img = blob(cx, cy, 0.14, 0.08, [0.15, 0.25, 0.7])
    img = blob(cx, cy - 0.01, 0.10, 0.05, [0.35, 0.5, 0.9], shade=0.1)
    # can seen from above-ish
    img = blob(0.45 + 0.1 * rng.rand(), horizon + 0.05 + 0.1 * rng.rand(), 0.05, 0.05, [0.8, 0.8, 0.85])
    # gripper: two grey fingers hanging from the top edge
    gx = 0.3 + 0.4 * rng.rand()
    for off in (-0.06, 0.06):
        finger = (np.abs(xx - gx - off) < 0.025) & (yy < 0.25 + 0.05 * rng.rand())
        img = np.where(finger[..., None], np.array([0.35, 0.35, 0.38]), img)
    img = np.where(((np.abs(xx - gx) < 0.1) & (yy < 0.08))[..., None], np.array([0.25, 0.25, 0.28]), img)
    img = img + 0.02 * rng.randn(s, s, 3)  # sensor noise
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
