"""Arrays derived from slow-to-read inputs, cached in a compact .npz file next to those inputs.

A cache file carries its key: a JSON string naming each input (absolute path, size, mtime in ns,
or a content hash) and the version of the code that derived the arrays. A file whose key differs
from the expected one is ignored and rebuilt. Writing is atomic (misc.io.atomic_path); a folder
that cannot be written (read-only data) means running without the cache, with one warning per
folder, never a failure.
"""
from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from nbt.misc.io import atomic_path

_WARNED: set[str] = set()


def file_stamp(path: str | Path) -> list:
    """[absolute path, size, mtime_ns]: changes whenever the file is rewritten or replaced."""
    p = Path(path).resolve()
    st = p.stat()
    return [str(p), st.st_size, st.st_mtime_ns]


def digest(obj) -> str:
    """Short content hash of any JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(next_to: str | Path, kind: str) -> Path:
    """`data/coco/dic_coco.json` + "boxes" -> `data/coco/dic_coco.boxes.npz`."""
    p = Path(next_to)
    return p.with_name(f"{p.stem}.{kind}.npz")


def load(path: str | Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose key is `key`; None when absent, stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def save(path: str | Path, key: str, arrays: dict[str, np.ndarray]) -> bool:
    """Write atomically; on a read-only folder warn once and return False."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, key=np.array(key), **arrays)
        return True
    except OSError as err:
        folder = str(path.parent.resolve())
        if folder not in _WARNED:
            _WARNED.add(folder)
            warnings.warn(f"cannot write the cache {path} ({err.strerror or err}); "
                          f"reading the inputs on every start instead", stacklevel=2)
        return False
