"""Captions -> `dic_*.json` + `cap_*.json` in the original's format (nbt-reference §1.2).

Input: a Karpathy-style `dataset_*.json` (COCO, Flickr30k, the built-in world) or plain COCO
`captions_*.json` files (2017 users). Output keys of the dic file: the original's `ix_to_word`,
`wtod`, `wtol`, `images[*].{split, file_path, id}`, plus ours: `classes`, `fg_words`, `plural_of`,
`split_scheme`, `fingerprint`. Unlike the original the vocabulary is counted on the training split
only (no test leakage) and its order is deterministic (count, then alphabetical).

    python prepro/prepro_dic_coco.py --input_json data/coco/dataset_coco.json \
        --class_name_file data/coco/coco_class_name.txt --split normal \
        --output_dic data/coco/dic_coco.json --output_cap data/coco/cap_coco.json
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from misc.annotations import BoxIndex
from misc.io import DataError, atomic_write_json, read_json
from misc.vocab import ClassNames, VisualWordMatcher, Vocabulary, build_vocab, plural_forms, word_to_lemma
from prepro.splits import index_robust, noc_split, robust_split, split_of_image


def tokenize(text: str) -> list[str]:
    """Karpathy-like: lower case, letters / digits / apostrophes, everything else splits."""
    return re.findall(r"[a-z0-9']+", text.lower())


def images_from_karpathy(path: str) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"{path}: not a Karpathy split file (no 'images')")
    out = []
    for im in data["images"]:
        try:
            split = "train" if im["split"] == "restval" else im["split"]
            out.append({"id": int(im.get("cocoid", im.get("imgid"))),
                        "file_path": f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"],
                        "split": split,
                        "captions": [s["tokens"] for s in im["sentences"]]})
        except (KeyError, TypeError):
            raise DataError(f"{path}: malformed image entry {str(im)[:80]}") from None
    return out


def images_from_coco_captions(paths: list[str], seed: int = 123) -> list[dict]:
    """COCO captions files: images of a '*train*' file are train, others halved into val / test."""
    out = []
    for path in paths:
        data = read_json(path)
        if "annotations" not in data or "images" not in data:
            raise DataError(f"{path}: not a COCO captions file")
        caps: dict[int, list[list[str]]] = {}
        for a in data["annotations"]:
            caps.setdefault(int(a["image_id"]), []).append(tokenize(a["caption"]))
        folder = re.sub(r"^captions_", "", Path(path).stem)
        images = sorted(data["images"], key=lambda im: im["id"])
        is_train = "train" in folder
        rng = random.Random(seed)
        order = list(range(len(images)))
        rng.shuffle(order)
        half = set(order[: len(order) // 2])
        for k, im in enumerate(images):
            split = "train" if is_train else ("val" if k in half else "test")
            out.append({"id": int(im["id"]), "file_path": f"{folder}/{im['file_name']}",
                        "split": split, "captions": caps.get(int(im["id"]), [])})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_json", default="", help="Karpathy-style dataset json")
    p.add_argument("--captions_json", nargs="*", default=[], help="COCO captions files (instead of --input_json)")
    p.add_argument("--class_name_file", required=True)
    p.add_argument("--instances_json", nargs="*", default=[], help="COCO instances (needed to regenerate splits)")
    p.add_argument("--split", default="normal", choices=["normal", "robust", "noc"])
    p.add_argument("--split_file", default="", help="robust / NOC split json; regenerated when absent")
    p.add_argument("--held_out", default="bottle,bus,couch,microwave,pizza,tennis racket,suitcase,zebra",
                   help="NOC held-out class names (the 8 DCC objects by default)")
    p.add_argument("--robust_max_test", type=int, default=15000)
    p.add_argument("--word_count_threshold", type=int, default=5)
    p.add_argument("--output_dic", required=True)
    p.add_argument("--output_cap", required=True)
    p.add_argument("--output_df", default="", help="CIDEr-D document frequencies of the train references")
    p.add_argument("--seed", type=int, default=123)
    args = p.parse_args(argv)
    try:
        run(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def run(args) -> dict:
    if bool(args.input_json) == bool(args.captions_json):
        raise DataError("give exactly one of --input_json or --captions_json")
    images = images_from_karpathy(args.input_json) if args.input_json else \
        images_from_coco_captions(args.captions_json, args.seed)
    classes = ClassNames.read(args.class_name_file)
    matcher = VisualWordMatcher(classes)

    scheme_split = {}
    if args.split != "normal":
        split_file = read_json(args.split_file) if args.split_file and Path(args.split_file).is_file() else None
        if split_file is None:
            if not args.instances_json:
                raise DataError(f"--split {args.split} without a split file needs --instances_json to regenerate it")
            boxes = BoxIndex.from_files(args.instances_json, classes)
            mentions = {im["id"]: matcher.mentioned_classes(im["captions"], boxes.present_classes(im["id"]))
                        for im in images}
            if args.split == "robust":
                split_file = robust_split(mentions, max_test_images=args.robust_max_test, seed=args.seed)
            else:
                names = [n.strip() for n in args.held_out.split(",") if n.strip()]
                unknown = [n for n in names if n not in classes.names]
                if unknown:
                    raise DataError(f"--held_out: '{unknown[0]}' is not a class of {args.class_name_file}")
                split_file = noc_split(mentions, [classes.names.index(n) + 1 for n in names], seed=args.seed)
                split_file["held_out"] = names
            if args.split_file:
                atomic_write_json(args.split_file, split_file)
        if args.split == "robust":
            split_file = index_robust(split_file)
        scheme_split = {im["id"]: split_of_image(split_file, im["id"], args.split) for im in images}
        if args.split == "noc":
            scheme_split["_held_out"] = split_file.get("held_out", [])

    for im in images:
        if scheme_split:
            im["split"] = scheme_split[im["id"]]
    train_caps = [c for im in images if im["split"] == "train" for c in im["captions"]]
    if not train_caps:
        raise DataError("no training captions: check the split field / split file")
    ix_to_word = build_vocab(train_caps, args.word_count_threshold)
    vocab = Vocabulary(ix_to_word, classes)
    all_caps = [c for im in images for c in im["captions"]]
    vocab.plural_of = plural_forms(all_caps, classes, matcher)
    wtol = word_to_lemma({t for c in all_caps for t in c}, classes)
    wtod = {w: c - 1 for w, c in classes.word_to_class().items()}     # original: 0-based line index
    dic = {
        "ix_to_word": ix_to_word, "wtod": wtod, "wtol": wtol,
        "images": [{"split": im["split"], "file_path": im["file_path"], "id": im["id"]} for im in images],
        "classes": list(classes.names), "fg_words": classes.fg_words, "plural_of": vocab.plural_of,
        "split_scheme": args.split, "held_out": scheme_split.get("_held_out", []),
        "fingerprint": vocab.fingerprint(),
    }
    # Tokens are stored as they are (the original wrote UNK here): the loader maps unknown words to
    # UNK itself, files of the original still load, and evaluation references keep every word.
    cap = [im["captions"] for im in images]
    atomic_write_json(args.output_dic, dic)
    atomic_write_json(args.output_cap, cap)
    if args.output_df:
        from tools.cider import document_frequency
        refs = [[" ".join(c) for c in im["captions"]] for im in images if im["split"] == "train"]
        atomic_write_json(args.output_df, document_frequency(refs))
    counts = {s: sum(im["split"] == s for im in images) for s in ("train", "val", "test", "rest")}
    print(f"{args.output_dic}: vocab {len(ix_to_word)}, images " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return dic


if __name__ == "__main__":
    sys.exit(main())
