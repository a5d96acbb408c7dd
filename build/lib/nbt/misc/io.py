"""Atomic file output and one-line input errors: nothing half-written, every failure names the file."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Unreadable or malformed input; the message is one line naming the file."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"malformed JSON in {path}: {str(err).splitlines()[0]}") from None


def open_h5(path: str | Path, required: tuple[str, ...] = ()):
    """Open an h5 file read-only and check it holds `required` datasets."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataError(f"not a readable HDF5 file: {path}") from None
    missing = [k for k in required if k not in f]
    if missing:
        f.close()
        raise DataError(f"{path}: missing dataset(s) {', '.join(missing)}")
    return f
