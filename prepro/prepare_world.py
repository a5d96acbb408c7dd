"""Generate the built-in world and run prepro for its three split schemes (normal, robust, NOC).

    python prepro/prepare_world.py --out data/world [--seed 123 ... any prepro/world.py option]
    python prepro/prepare_world.py --out data/world_zh --lang zh      # the same world in Chinese

writes, besides the world itself (prepro/world.py):
    <out>/dic_world.json, cap_world.json, world-train-df.json             normal split
    <out>/robust/dic_world.json, cap_world.json                          robust split
    <out>/noc/dic_world.json, cap_world.json                             NOC split
"""
from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

from nbt.misc.io import DataError
from nbt.prepro import prepro_dic_coco, world

# the built-in world's own places (relative to the working folder), per caption language
WORLD_ROOTS = {"en": Path("data/world"), "zh": Path("data/world_zh")}


def ensure_world(opt) -> None:
    """The built-in world is generated on first use (about ten seconds), and only into its own
    location, data/world (data/world_zh for `language: zh`): a mistyped --input_dic is a missing
    file, never a new world."""
    if opt.dataset != "world" or Path(opt.input_dic).is_file():
        return
    lang = opt.language or "en"
    home = WORLD_ROOTS[lang]
    root = Path(opt.input_dic).parent
    root = root.parent if root.name in ("robust", "noc") else root
    if root.resolve() != home.resolve() or (root / "dic_world.json").exists():
        raise DataError(f"file not found: {opt.input_dic} (the built-in world is generated only into "
                        f"{home}/; elsewhere run prepro/prepare_world.py --out DIR --lang {lang})")
    print(f"generating the built-in world in {root} ...", flush=True)
    prepare(world.WorldConfig(out=str(root), lang=lang))


def prepare(cfg: world.WorldConfig, quiet: bool = False) -> None:
    world.generate(cfg, quiet=quiet)
    out = Path(cfg.out)
    for scheme, sub in (("normal", ""), ("robust", "robust"), ("noc", "noc")):
        d = out / sub
        split_file = {"normal": "", "robust": "split_robust_world.json", "noc": "split_noc_world.json"}[scheme]
        prepro_dic_coco.run(Namespace(
            input_json=str(out / "dataset_world.json"), captions_json=[],
            class_name_file=str(out / "world_class_name.txt"), instances_json=[],
            split=scheme, split_file=str(out / split_file) if split_file else "",
            held_out=",".join(world.held_out_names(cfg)), robust_max_test=0, word_count_threshold=2,
            output_dic=str(d / "dic_world.json"), output_cap=str(d / "cap_world.json"),
            output_df=str(d / "world-train-df.json"), seed=cfg.seed, language=cfg.lang))


def main(argv=None) -> int:
    return world.main(argv, action=prepare)


if __name__ == "__main__":
    sys.exit(main())
