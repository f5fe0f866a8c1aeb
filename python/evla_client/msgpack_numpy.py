"""numpy arrays over msgpack, as openpi's ``openpi_client.msgpack_numpy``.

Arrays travel as maps ``{b"__ndarray__": True, b"data": bytes, b"dtype": str,
b"shape": tuple}`` and numpy scalars as ``{b"__npgeneric__": True, b"data":
value, b"dtype": str}``. Keys are bytes as openpi writes them; str keys are
accepted on input. Nothing here can construct arbitrary Python objects:
object, void and complex dtypes are refused, and msgpack ext types are not used.
"""
import functools

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")


def pack_array(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise ValueError(f"Unsupported dtype: {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": obj.tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {
            b"__npgeneric__": True,
            b"data": obj.item(),
            b"dtype": obj.dtype.str,
        }
    return obj


def _get(obj, name):
    value = obj.get(name.encode())
    return obj.get(name) if value is None else value


def unpack_array(obj):
    if _get(obj, "__ndarray__") is True:
        dtype = np.dtype(_get(obj, "dtype"))
        if dtype.kind in _REFUSED_KINDS:
            raise ValueError(f"Unsupported dtype: {dtype}")
        return np.ndarray(buffer=_get(obj, "data"), dtype=dtype, shape=tuple(_get(obj, "shape")))
    if _get(obj, "__npgeneric__") is True:
        dtype = np.dtype(_get(obj, "dtype"))
        if dtype.kind in _REFUSED_KINDS:
            raise ValueError(f"Unsupported dtype: {dtype}")
        return dtype.type(_get(obj, "data"))
    return obj


def _no_ext(code, data):
    raise ValueError(f"msgpack ext type {code} is not accepted")


Packer = functools.partial(msgpack.Packer, default=pack_array)
packb = functools.partial(msgpack.packb, default=pack_array)
Unpacker = functools.partial(msgpack.Unpacker, object_hook=unpack_array, ext_hook=_no_ext)
unpackb = functools.partial(msgpack.unpackb, object_hook=unpack_array, ext_hook=_no_ext)
