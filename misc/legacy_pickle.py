"""Python 2 pickles of the original's (its CIDEr-D document frequencies, its infos files), read
without running their code.

A pickle names the callables that rebuild its objects (`GLOBAL module name`, then `REDUCE`), and
the standard unpickler imports and calls whatever it names: `os.system` included. `load_legacy_pickle`
resolves only the (module, name) pairs of an allow-list and refuses any other in one line,
before anything is called. Python 2's module names are read as Python 3's (`__builtin__` ->
`builtins`, `copy_reg` -> `copyreg`), and its byte strings as text (latin-1, which maps every byte).

    df = load_legacy_pickle("data/coco-train-idxs.p", NGRAM_PICKLE_TYPES)
"""
from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path

from nbt.misc.io import DataError

# What the original's prepro_ngrams.py writes: {'document_frequency': defaultdict(float, {(w1, ...): n}),
# 'ref_len': n}: only the defaultdict and its float factory are rebuilt by name.
NGRAM_PICKLE_TYPES = frozenset({("collections", "defaultdict"), ("builtins", "float")})


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2's (module, name) as Python 3 spells it (pickle's own fix_imports tables)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: frozenset, where: str):
        super().__init__(file, encoding="latin1")
        self.allowed, self.where = allowed, where

    def find_class(self, module: str, name: str):
        if _py3_name(module, name) not in self.allowed:
            shown = ", ".join(sorted(f"{m}.{n}" for m, n in self.allowed)) or "none"
            raise DataError(f"{self.where}: refused: the pickle asks for {module}.{name}, which this file "
                            f"has no reason to hold (allowed: {shown}); not loaded")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise DataError(f"{self.where}: refused: the pickle holds a persistent reference; not loaded")


def load_legacy_pickle(path: str | Path, allowed: frozenset | set) -> object:
    """The object of a (Python 2 or 3) pickle file whose only rebuilt types are `allowed`,
    a set of (module, name) pairs in Python 3 spelling. DataError: the file is missing,
    not a pickle, or names anything else (refused before it is called)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _AllowListUnpickler(f, frozenset(allowed), str(path)).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, UnicodeDecodeError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable pickle ({text})") from None
