"""Minimal numpy reader/writer for the safetensors format (no third-party package).

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (padded
with spaces so the data buffer starts 8-byte aligned), then the data buffer.
The JSON maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
end]} (offsets relative to the buffer start, tiling it with no gaps) and the
optional "__metadata__" key to a str->str map.

numpy has no bfloat16: a BF16 tensor is written from a uint16 array holding the
raw bits (see `to_bf16`) with `dtypes={name: "BF16"}`, and read back as float32.
"""
import json
import struct

import numpy as np

# safetensors dtype string -> numpy dtype (little-endian). BF16 is raw uint16 bits.
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_FROM_NUMPY = {v: k for k, v in _DTYPES.items() if k != "BF16"}


def to_bf16(a):
    """float32 array -> uint16 array of bfloat16 bits (round to nearest even)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(a, dtype=np.float32))
    out = rounded.astype(np.uint16)
    out[nan] = 0x7FC0
    return out


def from_bf16(u16):
    """uint16 array of bfloat16 bits -> float32 array (exact)."""
    return (np.asarray(u16, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _dtype_name(arr, override):
    if override is not None:
        if override not in _DTYPES:
            raise ValueError(f"unknown safetensors dtype {override!r}")
        if override == "BF16" and arr.dtype != np.uint16:
            raise ValueError("BF16 tensors must be given as uint16 bit patterns (use to_bf16)")
        return override
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    for k, v in _DTYPES.items():
        if k != "BF16" and v == dt:
            return k
    raise ValueError(f"numpy dtype {arr.dtype} has no safetensors equivalent")


def write(path, tensors, metadata=None, dtypes=None):
    """Writes `tensors` (name -> np.ndarray) to `path`.

    metadata: optional str -> str map stored under "__metadata__".
    dtypes: optional name -> safetensors dtype string, needed only for BF16.
    Tensors are laid out by decreasing element size, then name, so every tensor
    is naturally aligned in a memory map (the buffer itself starts 8-aligned).
    Output is a pure function of the inputs (byte-identical on rerun).
    """
    dtypes = dtypes or {}
    entries = []
    for name, arr in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved")
        arr = np.asarray(arr)
        dname = _dtype_name(arr, dtypes.get(name))
        data = np.ascontiguousarray(arr, dtype=_DTYPES[dname]).tobytes()
        entries.append((name, dname, [int(s) for s in arr.shape], data))
    entries.sort(key=lambda e: (-_DTYPES[e[1]].itemsize, e[0]))

    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dname, shape, data in entries:
        header[name] = {"dtype": dname, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for _, _, _, data in entries:
            f.write(data)


def read_header(path):
    """(name -> {"dtype", "shape", "data_offsets"}, metadata dict) of a safetensors file, without
    reading its tensors (e.g. to list a large shard's episodes)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: file too short")
        (n,) = struct.unpack("<Q", head)
        text = f.read(n)
    if len(text) < n:
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(text.decode("utf-8"))
    return header, header.pop("__metadata__", None) or {}


def read(path, bf16_as_float32=True):
    """Reads a safetensors file. Returns (name -> np.ndarray, metadata dict).

    Validates that offsets tile the buffer exactly and match dtype x shape.
    BF16 tensors come back as float32 unless bf16_as_float32=False (raw uint16).
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: file too short")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} exceeds file size")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    buf = memoryview(blob)[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    spans = []
    for name, info in header.items():
        dname = info["dtype"]
        if dname not in _DTYPES:
            raise ValueError(f"{path}: tensor {name}: unknown dtype {dname}")
        dt = _DTYPES[dname]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dt.itemsize or begin < 0 or end > len(buf):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {begin},{end}")
        spans.append((begin, end))
        arr = np.frombuffer(buf[begin:end], dtype=dt).reshape(shape).copy()
        if dname == "BF16" and bf16_as_float32:
            arr = from_bf16(arr)
        tensors[name] = arr
    pos = 0
    for begin, end in sorted(spans):
        if begin != pos:
            raise ValueError(f"{path}: data_offsets leave a gap or overlap at byte {pos}")
        pos = end
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes after the last tensor")
    return tensors, metadata
