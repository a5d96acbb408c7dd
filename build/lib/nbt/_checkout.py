"""`import nbt` from a checkout: binds the package name `nbt` to the folder this file is in.

Installed (`pip install -e .` or a wheel), the project is the package `nbt` (its folders misc/,
pooling/, prepro/, tools/ become nbt.misc, nbt.pooling, ...), so it claims no generic top-level
names. A script run from a checkout (`python main.py`, `python prepro/prepro_det.py`) imports
this module first: then `nbt` means this checkout, even where another checkout is installed
(unless something in the process bound `nbt` before).
"""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def bind() -> None:
    spec = importlib.util.spec_from_file_location("nbt", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["nbt"] = module
    spec.loader.exec_module(module)


if "nbt" not in sys.modules:   # a benchmark measuring another checkout may have bound it already
    bind()
