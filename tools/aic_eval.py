"""Score an AI Challenger caption submission against the official reference file, as its evaluation does.

    python tools/aic_eval.py --submit my_captions.json --ref id_to_words.json [--class_name_file F]

The submission ([{"image_id": "<name>", "caption": "raw Chinese"}]) is checked as the official tool
checks it (prepro/ai_challenger.py: an empty caption, a missing key, an unknown image, fewer or more
captions than images are one-line errors, exit status 2), its captions are segmented by jieba's
precise mode (misc/language.py; with --class_name_file, the class words are kept whole as in
prepro), the references are read as segmented, and BLEU-1..4, METEOR (where Java is present),
ROUGE-L and CIDEr are printed (misc/metrics.py).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

from nbt.misc.io import DataError
from nbt.misc.language import language_for
from nbt.misc.metrics import java_available, score_captions
from nbt.misc.vocab import ClassNames
from nbt.prepro.ai_challenger import Reference


def evaluate(submit: str, ref: str, class_name_file: str = "") -> dict:
    reference = Reference(ref)
    captions = reference.read_submission(submit)
    zh = language_for("zh", ClassNames.read(class_name_file) if class_name_file else None)
    hyps = {k: " ".join(zh.segment(c)) for k, c in captions.items()}
    refs = {k: [" ".join(c) for c in caps] for k, caps in reference.captions.items()}
    overall, _ = score_captions(refs, hyps, meteor=java_available(), segmenter=zh.metric_segmenter)
    return overall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submit", required=True, help="the submission json: [{image_id, caption}]")
    p.add_argument("--ref", required=True, help="the official reference file (COCO format, segmented captions)")
    p.add_argument("--class_name_file", default="", help="keep these class words whole when segmenting (as prepro)")
    args = p.parse_args(argv)
    try:
        scores = evaluate(args.submit, args.ref, args.class_name_file)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: (round(v, 6) if v is not None else None) for k, v in scores.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
