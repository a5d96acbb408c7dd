"""Neural Baby Talk: train, or evaluate a checkpoint (--inference_only True).

    python main.py                                     # the built-in world (cfgs/world.yml)
    python main.py --path_opt cfgs/normal_coco_res101.yml --batch_size 20
    python main.py --path_opt cfgs/normal_coco_res101.yml --inference_only True --beam_size 3 \
        --start_from save/normal_coco_res101

Options come from cfgs/*.yml and the command line (the command line wins); `--help` lists them.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from misc.config import ConfigError, build_options, main_argparser_help
from misc.io import DataError

DEFAULT_CFG = "cfgs/world.yml" if Path("cfgs/world.yml").is_file() else str(Path(__file__).resolve().parent / "cfgs" / "world.yml")


def ensure_world(opt) -> None:
    """The built-in world is generated on first use (about half a minute)."""
    if opt.dataset != "world" or Path(opt.input_dic).is_file():
        return
    from prepro.prepare_world import prepare
    from prepro.world import WorldConfig
    root = Path(opt.input_dic).parent
    root = root.parent if root.name in ("robust", "noc") else root
    print(f"generating the built-in world in {root} ...", flush=True)
    prepare(WorldConfig(out=str(root)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(main_argparser_help())
        return 0
    try:
        opt = build_options(argv, default_cfg=DEFAULT_CFG)
        ensure_world(opt)
        from misc.session import inference, train
        if opt.inference_only:
            inference(opt)
            return 0
        run = train(opt)
        print(f"checkpoints in {run['dir']}")
        if opt.eval_split and not run["state"]["stop"]:
            from dataclasses import replace
            inference(replace(opt, start_from=run["dir"], id=Path(run["dir"]).name))
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("once")
    sys.exit(main())
