"""Neural Baby Talk: train, or evaluate a checkpoint (--inference_only True).

    python main.py                                     # the built-in world (cfgs/world.yml)
    python main.py --path_opt cfgs/normal_coco_res101.yml --batch_size 20
    python main.py --path_opt cfgs/normal_coco_res101.yml --inference_only True --beam_size 3 \\
        --start_from save/normal_coco_res101

Options come from cfgs/*.yml and the command line (the command line wins); `--help` lists them.
Exit status: 0 done, 2 bad option or data (one line on stderr), 130 / 143 interrupted by
SIGINT / SIGTERM after writing a resumable checkpoint.
"""
from __future__ import annotations

import os

# OpenMP threads that wait by sleeping, not spinning (set before torch loads; an explicit
# OMP_WAIT_POLICY wins): 10 % slower on an idle 2-core machine, 1.7x faster with one other busy
# process (benchmarks/README.md, "CPU threads"); the numbers a run computes do not change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

if __package__ in (None, ""):   # `python main.py` from a checkout: `nbt` is this checkout
    import _checkout  # noqa: F401

from nbt.misc.config import ConfigError, format_help, help_defaults, parse_options
from nbt.misc.io import DataError

DEFAULT_CFG = "cfgs/world.yml" if Path("cfgs/world.yml").is_file() else str(Path(__file__).resolve().parent / "cfgs" / "world.yml")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if "-h" in argv or "--help" in argv:
            print(format_help("main.py", __doc__.strip().splitlines()[0], help_defaults(argv, DEFAULT_CFG)))
            return 0
        opt, cli_keys = parse_options(argv, default_cfg=DEFAULT_CFG)
        from nbt.misc.session import Interrupted, inference, train
        if opt.inference_only:                    # the data is the checkpoint's (session.inference)
            inference(opt, cli_keys=cli_keys)
            return 0
        from nbt.prepro.prepare_world import ensure_world     # torch and the generator: not for --help
        ensure_world(opt)
        try:
            run = train(opt)
        except Interrupted as stop:
            return 128 + stop.signum
        print(f"checkpoints in {run['dir']}")
        if opt.eval_split and not run["state"]["stop"]:
            from dataclasses import replace
            inference(replace(opt, start_from=run["dir"], id=Path(run["dir"]).name, resume_epoch=-1), cli_keys=cli_keys)
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:                 # before training started, or a second Ctrl-C
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("once")
    sys.exit(main())
