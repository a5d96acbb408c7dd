"""Python 2 cPickle protocol-2 bytes, written opcode by opcode, for the original's pickles (no
Python 2 here): byte strings are SHORT_BINSTRING / BINSTRING as Python 2 wrote its `str`, unicode
is BINUNICODE, a defaultdict is GLOBAL collections.defaultdict + its factory + REDUCE and then its
items, as Python 2's defaultdict.__reduce__ made cPickle write it."""
from __future__ import annotations

import struct
from collections import defaultdict


class Unicode(str):
    """A Python 2 `unicode` value (prepro_ngrams.py's -words keys); plain str is Python 2 `str`."""


def dumps(obj) -> bytes:
    return b"\x80\x02" + _save(obj) + b"."


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _items(pairs) -> bytes:
    out = b""
    pairs = list(pairs)
    for i in range(0, len(pairs), 1000):                   # cPickle's batches of SETITEMS
        out += b"(" + b"".join(_save(k) + _save(v) for k, v in pairs[i:i + 1000]) + b"u"
    return out


def _save(obj) -> bytes:
    if isinstance(obj, defaultdict):
        factory = {float: ("__builtin__", "float"), int: ("__builtin__", "int")}[obj.default_factory]
        return _global("collections", "defaultdict") + _global(*factory) + b"\x85R" + _items(obj.items())
    if isinstance(obj, dict):
        return b"}" + _items(obj.items())
    if isinstance(obj, tuple):
        body = b"".join(_save(x) for x in obj)
        return {0: b")", 1: body + b"\x85", 2: body + b"\x86", 3: body + b"\x87"}.get(len(obj), b"(" + body + b"t")
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, Unicode):
        data = obj.encode("utf-8")
        return b"X" + struct.pack("<I", len(data)) + data
    if isinstance(obj, str):
        data = obj.encode("latin-1")
        return (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data
    raise TypeError(f"py2pickle: {type(obj).__name__}")
