"""Generate the built-in world and run prepro for its three split schemes (normal, robust, NOC).

    python prepro/prepare_world.py --out data/world [--seed 123 ... any prepro/world.py option]

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

from nbt.prepro import prepro_dic_coco, world


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
            held_out=",".join(cfg.noc_held_out), robust_max_test=0, word_count_threshold=2,
            output_dic=str(d / "dic_world.json"), output_cap=str(d / "cap_world.json"),
            output_df=str(d / "world-train-df.json"), seed=cfg.seed))


def main(argv=None) -> int:
    try:
        prepare(world._parse(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
