"""Shared set-up for the benchmarks: the built-in world (generated on demand) and a model."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import _checkout  # noqa: E402,F401  (`nbt` = this checkout)


from nbt.misc.config import build_options  # noqa: E402


def world_options(**overrides):
    opt = build_options(["--path_opt", str(ROOT / "cfgs" / "world.yml")])
    opt = dataclasses.replace(opt, **{k: v for k, v in overrides.items()})
    root = ROOT / "data" / "world"
    if not (root / "dic_world.json").is_file():
        from nbt.prepro.prepare_world import prepare
        from nbt.prepro.world import WorldConfig
        prepare(WorldConfig(out=str(root)), quiet=True)
    opt = dataclasses.replace(opt, **{k: str(ROOT / v) if isinstance(v, str) and v.startswith("data/") else v
                                      for k, v in opt.to_dict().items() if k in (
                                          "input_json", "input_dic", "image_path", "proposal_h5",
                                          "class_name_file", "cached_tokens")})
    return dataclasses.replace(opt, instances_json=[str(ROOT / p) for p in opt.instances_json])


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of `repeat` runs, seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def load_trained_or_random(opt, bundle, device):
    from nbt.misc.checkpoint import load_checkpoint
    from nbt.misc.builders import build_model
    model = build_model(opt, bundle, device)
    ckpt = ROOT / "save" / "world" / "model-best.pth"
    if ckpt.is_file():
        model.load_state_dict(load_checkpoint(ckpt)["model"])
        return model.eval(), "trained save/world"
    return model.eval(), "random init (no save/world yet)"
