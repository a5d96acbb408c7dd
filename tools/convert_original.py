"""Convert a model trained with the original NeuralBabyTalk into a run folder of this project.

    python tools/convert_original.py save/coco_nbt_1024 save/coco_nbt_1024_converted

SRC: the original's folder with model-best.pth and infos_<id>-best.pkl (or a model[-best].pth file
with its infos next to it). OUT gets model-best.pth (a checkpoint of this project, carrying the
vocabulary and classes), config.yml (the options that make this project compute the original's
function) and class_name.txt (its classes and fine-grained words, one line per class, for
preparing data with the same class list). misc/original_checkpoint.py documents the mapping.
main.py, demo.py, the API and the web page also accept SRC itself (converted when loaded).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):   # `python tools/convert_original.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import _checkout  # noqa: F401

from nbt.misc.checkpoint import load_checkpoint, save_checkpoint
from nbt.misc.config import options_from_dict
from nbt.misc.io import DataError, atomic_write_text
from nbt.misc.original_checkpoint import class_file_text
from nbt.misc.vocab import ClassNames


def write_run(ckpt: dict, out: Path) -> list[Path]:
    """The converted checkpoint as a run folder: model-best.pth, config.yml, class_name.txt."""
    voc = ckpt["vocabulary"]
    text = class_file_text(ClassNames(tuple(voc["classes"]), tuple(tuple(w) for w in voc["class_words"])))
    paths = [out / "model-best.pth", out / "config.yml", out / "class_name.txt"]
    save_checkpoint(paths[0], ckpt)
    options_from_dict(ckpt["config"]).save(paths[1])
    atomic_write_text(paths[2], text)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("src", help="the original's run folder (model-best.pth + infos_<id>-best.pkl) or a .pth file")
    p.add_argument("out", help="folder to write the converted run into")
    p.add_argument("--overwrite", action="store_true", help="replace a model-best.pth already in OUT")
    args = p.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    try:
        if (out / "model-best.pth").exists() and not args.overwrite:
            raise DataError(f"{out} already holds a model-best.pth; pass --overwrite to replace it")
        if out.resolve() == (src if src.is_dir() else src.parent).resolve():
            raise DataError(f"{out} is the original's folder: write the converted run elsewhere")
        ckpt = load_checkpoint(src)
        if "vocabulary" not in ckpt or "original" not in ckpt:
            raise DataError(f"{src}: already a checkpoint of this project, nothing to convert")
        for path in write_run(ckpt, out):
            print(f"wrote {path}")
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
