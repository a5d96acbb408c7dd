"""The original NeuralBabyTalk's `infos_<id>[-best].pkl`, read without running any of its code.

Its main.py pickles (Python 2 `pickle.dump`: protocol 0 by default; every protocol is read here)

    {'opt': argparse.Namespace,   # its options, plus what main.py adds from the data: vocab_size,
                                  # detect_size, fg_size, itow, itod, ltow, itoc (dicts) and the torch
                                  # tensors fg_mask, glove_fg, glove_clss, glove_w, st2towidx
     'vocab': ix_to_word, 'iter': int, 'epoch': int, 'best_val_score': float or numpy.float64}

A pickle names the callables that rebuild its objects (GLOBAL module name, then REDUCE / NEWOBJ),
and Python's unpickler imports and calls whatever it names, `os.system` included. Here every
(module, name) is looked up in `ALLOWED`, which maps it to a constructor of ours; any other name is
refused in one line before anything is called:

- argparse.Namespace (protocol 2 builds it with NEWOBJ; protocols 0 / 1 call
  copy_reg._reconstructor(Namespace, object, None), accepted for exactly that class and base);
- collections.OrderedDict; numpy dtypes, scalars and arrays of any dtype but `object`;
- torch tensors. A Python 2 pickle of a torch 0.4 tensor is `_rebuild_tensor_v2(storage, offset,
  size, stride, requires_grad, hooks)` where the storage is `torch.storage._load_from_bytes(bytes)`
  of a nested torch.save. torch's own `_load_from_bytes` reads those bytes with
  `torch.load(weights_only=False)`, i.e. it would run whatever the nested pickle names; here they go
  through `torch.load(weights_only=True)` (torch's restricted unpickler: storages and plain
  containers only), and the tensor is rebuilt from that storage with its offset, size and stride
  checked, without gradient flag or hooks.

Python 2 strings are read as latin-1 (every byte is a character), so byte strings survive.
"""
from __future__ import annotations

import argparse
import collections
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from nbt.misc.io import DataError


class RefusedPickle(DataError):
    """A pickle that names something it has no reason to hold."""


def _reconstructor(cls, base, state):
    """copy_reg._reconstructor, for the one use an infos pickle has: Namespace on object."""
    if cls is not argparse.Namespace or base is not object or state is not None:
        raise RefusedPickle(f"copy_reg._reconstructor({getattr(cls, '__name__', cls)}, "
                            f"{getattr(base, '__name__', base)}, ...)")
    return object.__new__(cls)


def _dtype(*args):
    dt = np.dtype(*args)
    if dt.hasobject:
        raise RefusedPickle("a numpy object dtype")
    return dt


def _load_storage(data):
    """torch.storage._load_from_bytes, with torch's restricted loader (see the module docstring)."""
    if isinstance(data, str):                 # a Python 2 byte string, read as latin-1
        data = data.encode("latin1")
    if not isinstance(data, bytes):
        raise RefusedPickle(f"a tensor storage given as {type(data).__name__}")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as err:
        raise RefusedPickle(f"a tensor storage torch's weights-only loader refuses "
                            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise RefusedPickle(f"a tensor storage that is a {type(storage).__name__}")
    return storage


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """torch._utils._rebuild_tensor(_v2) without requires_grad, hooks or metadata."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise RefusedPickle("a tensor without a storage")
    try:
        size, stride, offset = [int(s) for s in size], [int(s) for s in stride], int(offset)
        if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
            raise ValueError
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
        if last >= storage._untyped_storage.nbytes() // torch.empty(0, dtype=storage.dtype).element_size():
            raise ValueError
    except (TypeError, ValueError):
        raise RefusedPickle("a tensor whose size / stride do not fit its storage") from None
    return torch.empty(0, dtype=storage.dtype).set_(storage._untyped_storage, offset, size, stride).clone()


def _numpy_multiarray():
    """numpy's multiarray module (numpy._core in numpy 2, numpy.core before)."""
    try:
        from numpy._core import multiarray
    except ImportError:                                    # numpy < 2
        from numpy.core import multiarray
    return multiarray


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise RefusedPickle("a numpy scalar of an object dtype")
    if isinstance(data, str):
        data = data.encode("latin1")
    return _numpy_multiarray().scalar(dtype, data)


def _reconstruct(cls, shape, dtype):
    if cls is not np.ndarray:
        raise RefusedPickle(f"a numpy array of class {getattr(cls, '__name__', cls)}")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, _dtype(dtype))


def _latin1_bytes(text, encoding):
    """_codecs.encode(text, 'latin1'): how Python 3 writes bytes at protocols 0 - 2."""
    if not isinstance(text, str) or encoding != "latin1":
        raise RefusedPickle(f"_codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    ("argparse", "Namespace"): argparse.Namespace,
    ("copy_reg", "_reconstructor"): _reconstructor, ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object, ("builtins", "object"): object,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "dtype"): _dtype, ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor, ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _load_storage,
}


class _InfosUnpickler(pickle.Unpickler):
    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None:
            raise RefusedPickle(f"{self.where}: refused: the pickle asks for {module}.{name}, which an infos "
                                "file of the original has no reason to hold; nothing of it was run")
        return found

    def persistent_load(self, pid):
        raise RefusedPickle(f"{self.where}: refused: the pickle holds a persistent reference; nothing of it was run")


def read_infos(path: str | Path) -> dict:
    """The infos dict of an `infos_<id>[-best].pkl`; DataError (one line) when the file is missing,
    not a pickle, names anything outside ALLOWED (refused before it is called) or is not an infos
    dict (no 'opt' Namespace)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"infos file not found: {path}")
    try:
        with open(path, "rb") as f:
            infos = _InfosUnpickler(f, str(path)).load()
    except RefusedPickle as err:
        text = str(err)
        raise DataError(text if text.startswith(str(path)) else f"{path}: refused: the pickle holds {text}; "
                        "nothing of it was run") from None
    except DataError:
        raise
    except Exception as err:      # pickle, EOF, value, type, unicode errors: not a readable pickle
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable pickle ({text})") from None
    if not isinstance(infos, dict) or not isinstance(infos.get("opt"), argparse.Namespace):
        raise DataError(f"{path}: not an infos file of the original NeuralBabyTalk (a dict with its options "
                        f"under 'opt', as its main.py writes)")
    return infos
