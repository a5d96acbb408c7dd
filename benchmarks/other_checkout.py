"""Bind the name `nbt` to another checkout, so that a benchmark of this checkout can measure an
older one's code side by side (`bench_train_step.py --before DIR`, `coco_scale.py --code DIR`).

A checkout laid out as the package nbt (it has _checkout.py) is bound as it binds itself. An older
one, whose code imports the top-level names misc, pooling, prepro, tools, is put on sys.path and
`nbt.<name>...` is made an alias of `<name>...` (the same module objects, not a second copy).
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name == "nbt" or name.startswith("nbt."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        if spec.name == "nbt":
            module = types.ModuleType("nbt")
            module.__path__ = []
            return module
        return importlib.import_module(spec.name[len("nbt."):])

    def exec_module(self, module):
        pass


def bind(checkout: str | Path) -> None:
    checkout = str(Path(checkout).resolve())
    sys.path.insert(0, checkout)
    for name in [m for m in sys.modules if m == "nbt" or m.startswith("nbt.")]:
        del sys.modules[name]
    if (Path(checkout) / "_checkout.py").is_file():
        import _checkout
        _checkout.bind()
    else:
        sys.meta_path.insert(0, _Alias())
