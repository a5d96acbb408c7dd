"""Captions -> `dic_*.json` + `cap_*.json` in the original's format.

Input: a Karpathy-style `dataset_*.json` (COCO, Flickr30k, the built-in world), plain COCO
`captions_*.json` files (2017 users) or AI Challenger's caption files (`--aic_json`, Chinese:
prepro/ai_challenger.py). `--language` (en, zh) chooses the segmentation of raw captions and the
visual-word matcher (misc/language.py); the dic records it as `language`. Output keys of the dic file: the original's `ix_to_word`,
`wtod`, `wtol`, `images[*].{split, file_path, id}`, plus ours: `classes`, `fg_words`, `plural_of`,
`split_scheme`, `held_out`, `agreement` (Chinese: noun -> its measure word), `fingerprint`. Unlike the original the vocabulary is counted on the
training split only (no test leakage) and its order is deterministic (count, then alphabetical).
A word is kept when it occurs MORE than --word_count_threshold times in the training captions
(the original's rule: 5 keeps words seen 6+ times, 1 drops every word seen once, 0 keeps all).

NOC with a split file: the held-out classes are --held_out; else the file's own `held_out` list
(files this project writes); else, for the original's `split_noc_coco.json` (recognised by its
structure: no held-out list, val within val_train and test within test_train), DCC's eight
objects, as the original's code fixed them; else (other DCC-style files) inferred from the split
(`held_out_from_split`). Each choice is printed.

    python prepro/prepro_dic_coco.py --input_json data/coco/dataset_coco.json \
        --class_name_file data/coco/coco_class_name.txt --split normal \
        --output_dic data/coco/dic_coco.json --output_cap data/coco/cap_coco.json
"""
from __future__ import annotations

import argparse
import os
import random
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

from tqdm import tqdm

from nbt.misc.annotations import BoxIndex
from nbt.misc.cider import document_frequency
from nbt.misc.dcc import DCC_ORDER, dcc_class_names
from nbt.misc.io import DataError, atomic_write_json, read_json
from nbt.misc.language import Language, language_for
from nbt.misc.vocab import ClassNames, VisualWordMatcher, Vocabulary, build_vocab, tokenize
from nbt.prepro.ai_challenger import images_from_aic
from nbt.prepro.splits import NocSplit, held_out_from_split, noc_split, read_split, robust_split


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


def images_from_coco_captions(paths: list[str], seed: int = 123, quiet: bool = False,
                              segment=tokenize) -> list[dict]:
    """COCO captions files: images of a '*train*' file are train, others halved into val / test.
    Images listed more than once (the AI Challenger reference file lists one per caption) count once."""
    out = []
    for path in paths:
        data = read_json(path)
        if "annotations" not in data or "images" not in data:
            raise DataError(f"{path}: not a COCO captions file")
        caps: dict[int, list[list[str]]] = {}
        for a in tqdm(data["annotations"], desc=f"tokenise {Path(path).name}", unit=" captions",
                      disable=quiet or None, mininterval=1):
            caps.setdefault(int(a["image_id"]), []).append(segment(a["caption"]))
        folder = re.sub(r"^captions_", "", Path(path).stem)
        images = sorted({im["id"]: im for im in data["images"]}.values(), key=lambda im: im["id"])
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


# What the original's prepro read from fixed places (its data README's commands name none of them).
DEFAULT_CLASS_FILE = "data/coco/coco_class_name.txt"
DEFAULT_SPLIT_FILES = {"robust": "data/robust_coco/split_robust_coco.json", "noc": "data/noc_coco/split_noc_coco.json"}


def build_parser() -> argparse.ArgumentParser:
    """The original's option names (`--output_dic_json`, `--output_cap_json`) with their
    abbreviations (`--output_dic`), as its data README's commands use them."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_json", default="", help="Karpathy-style dataset json (dataset_coco.json)")
    p.add_argument("--captions_json", nargs="*", default=[], help="COCO captions files (instead of --input_json)")
    p.add_argument("--aic_json", nargs="*", default=[],
                   help="AI Challenger caption files (instead of --input_json; implies --language zh)")
    p.add_argument("--language", default="", choices=["", "en", "zh"],
                   help="caption language: en (spaCy's English rules) or zh (jieba); default en, zh with --aic_json")
    p.add_argument("--class_name_file", default=DEFAULT_CLASS_FILE,
                   help="class-name file: one line per class, comma-separated fine-grained words")
    p.add_argument("--instances_json", nargs="*", default=[],
                   help="COCO instances of these images (needed to regenerate a robust split); recorded in the "
                        "dic, where runs take them from. Default with --captions_json: the instances_*.json "
                        "files next to the captions files, when they exist")
    p.add_argument("--split", default="normal", choices=["normal", "robust", "noc"],
                   help="normal (Karpathy), robust or noc (DCC) splits")
    p.add_argument("--split_file", default="",
                   help="robust / NOC split json; default: the original's place "
                        f"({', '.join(DEFAULT_SPLIT_FILES.values())}) when it exists; regenerated when absent")
    p.add_argument("--held_out", default="",
                   help="NOC held-out class names, comma-separated. With --split_file: default = read "
                        "from the file (its 'held_out' list; DCC's 8 objects for the original's file; else "
                        "inferred from the split); when regenerating the split: default = the 8 DCC objects "
                        f"({', '.join(DCC_ORDER)})")
    p.add_argument("--robust_max_test", type=int, default=15000, help="robust split: stop after this many test images")
    p.add_argument("--word_count_threshold", type=int, default=5,
                   help="keep words seen MORE than this many times in the training captions (the "
                        "original's rule: 5 keeps words seen 6+ times, 1 drops words seen once, 0 keeps "
                        "every word); the others read as UNK")
    p.add_argument("--output_dic_json", "--output_dic", dest="output_dic", required=True,
                   help="the dic file to write (vocabulary, visual words, images and splits)")
    p.add_argument("--output_cap_json", "--output_cap", dest="output_cap", required=True,
                   help="the caption file to write (token lists per image)")
    p.add_argument("--output_df", default="", help="CIDEr-D document frequencies of the train references")
    p.add_argument("--max_length", type=int, default=None,
                   help="accepted for the original's commands, with no effect (the original parsed it and never "
                        "used it): captions are kept whole, so that evaluation references stay whole; runs cut "
                        "them at --seq_length")
    p.add_argument("--seed", type=int, default=123, help="seed of regenerated splits")
    p.add_argument("--quiet", action="store_true", help="no progress bars (shown on a terminal only)")
    return p


def shipped_if_default(path: str, default: str) -> str:
    """A class-name file option: the default (relative to the working folder) when it is there,
    else the copy this checkout ships at that place; any other value as given."""
    if path == default and not Path(default).is_file():
        return str(Path(__file__).resolve().parents[1] / default)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.class_name_file = shipped_if_default(args.class_name_file, DEFAULT_CLASS_FILE)
    if args.split != "normal" and not args.split_file and Path(DEFAULT_SPLIT_FILES[args.split]).is_file():
        args.split_file = DEFAULT_SPLIT_FILES[args.split]
    try:
        run(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


UNK_ADVICE_SHARE = 0.10      # above this share of UNK training tokens prepro says what to do


def run(args) -> dict:
    quiet = getattr(args, "quiet", False)
    aic = getattr(args, "aic_json", [])
    if sum(map(bool, (args.input_json, args.captions_json, aic))) != 1:
        raise DataError("give exactly one of --input_json, --captions_json or --aic_json")
    if getattr(args, "max_length", None) is not None:
        print(f"note: --max_length {args.max_length} has no effect (the original parsed it and never used it): "
              "captions are kept whole; runs cut them at --seq_length")
    instances = instance_files(args)
    classes = ClassNames.read(args.class_name_file)
    language = language_for(getattr(args, "language", "") or ("zh" if aic else "en"), classes)
    if args.input_json:
        images = images_from_karpathy(args.input_json)
    elif aic:
        images = images_from_aic(aic, language.segment, args.seed)
    else:
        images = images_from_coco_captions(args.captions_json, args.seed, quiet, language.segment)
    matcher = language.matcher
    held_out = apply_split(args, images, classes, matcher) if args.split != "normal" else []
    return write_outputs(args, images, classes, matcher, held_out=held_out, split_scheme=args.split,
                         language=language, instances=instances)


def write_outputs(args, images: list[dict], classes: ClassNames, matcher: VisualWordMatcher, *,
                  held_out: list[str], split_scheme: str, cap_records: list | None = None,
                  language: Language | None = None, instances: list[str] = ()) -> dict:
    """images[*] {id, file_path, split, captions (token lists)} -> the dic, cap (`cap_records` when
    given: grounded captions) and df files named by args; prints a one-line summary. `language`:
    the captions' (default English); `instances`: instance files the dic records for the runs."""
    language = language or language_for("en", classes)
    quiet = getattr(args, "quiet", False)
    train_caps = [c for im in images if im["split"] == "train" for c in im["captions"]]
    if not train_caps:
        raise DataError("no training captions: check the split field / split file")
    ix_to_word = build_vocab(train_caps, args.word_count_threshold)
    vocab = Vocabulary(ix_to_word, classes, language=language)
    all_caps = [c for im in images for c in im["captions"]]
    vocab.plural_of = language.plural_of(tqdm(all_caps, desc="visual words", unit=" captions",
                                              disable=quiet or None, mininterval=1))
    wtod = {w: c - 1 for w, c in classes.word_to_class().items()}     # original: 0-based line index
    dic = {
        "ix_to_word": ix_to_word, "wtod": wtod, "wtol": language.word_to_lemma({t for c in all_caps for t in c}),
        "images": [{"split": im["split"], "file_path": im["file_path"], "id": im["id"]} for im in images],
        "classes": list(classes.names), "fg_words": classes.fine_words, "plural_of": vocab.plural_of,
        "split_scheme": split_scheme, "held_out": held_out, "language": language.code,
        "agreement": language.agreement(train_caps),
        "fingerprint": vocab.fingerprint(),
    }
    if instances:                       # runs read them from here unless told otherwise (misc/config.py)
        dic["instances_json"] = [os.path.relpath(os.path.abspath(f), os.path.dirname(os.path.abspath(args.output_dic)))
                                 for f in instances]          # relative to the dic's folder
    # Tokens are stored as they are (the original wrote UNK here): the loader maps unknown words to
    # UNK itself, files of the original still load, and evaluation references keep every word.
    cap = [im["captions"] for im in images] if cap_records is None else cap_records
    atomic_write_json(args.output_dic, dic)
    atomic_write_json(args.output_cap, cap)
    if args.output_df:
        train = [im["captions"] for im in images if im["split"] == "train"]
        refs = [[" ".join(c) for c in caps] for caps in train]
        atomic_write_json(args.output_df, document_frequency(refs, quiet=quiet))
    counts = {s: sum(im["split"] == s for im in images) for s in ("train", "val", "test", "rest")}
    unk = sum(t not in vocab.word_to_ix for c in train_caps for t in c) / max(sum(map(len, train_caps)), 1)
    print(f"{args.output_dic}: vocab {len(ix_to_word)} (UNK {100 * unk:.1f} % of training tokens), images "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if unk > UNK_ADVICE_SHARE:
        print(f"note: {100 * unk:.1f} % of the training tokens are UNK (words seen at most {args.word_count_threshold} "
              f"times), so captions will be full of UNK: on a data set this small pass a lower "
              f"--word_count_threshold (1 drops only words seen once, 0 keeps every word)")
    if instances:
        print(f"{args.output_dic}: records the instance files {', '.join(instances)} (runs use them unless "
              "given --instances_json)")
    return dic


def instance_files(args) -> list[str]:
    """The instance files of the data set: --instances_json, else, with --captions_json, the
    instances_<name>.json next to each captions_<name>.json when every one exists. Each must exist."""
    given = list(getattr(args, "instances_json", None) or [])
    for f in given:
        if not Path(f).is_file():
            raise DataError(f"file not found: {f} (--instances_json)")
    if given or not args.captions_json:
        return given
    beside = [Path(c).with_name(re.sub(r"^captions_", "instances_", Path(c).name)) for c in args.captions_json]
    if all(p.is_file() and p.name.startswith("instances_") for p in beside):
        return [str(p) for p in beside]
    return []


def apply_split(args, images: list[dict], classes: ClassNames, matcher: VisualWordMatcher) -> list[str]:
    """Set images[*]["split"] from a robust / NOC split file (regenerated when absent); returns the
    NOC held-out class names ([] for robust)."""
    path = Path(args.split_file) if args.split_file else None
    data = read_json(path) if path and path.is_file() else None
    given = [n.strip() for n in args.held_out.split(",") if n.strip()]
    unknown = [n for n in given if n not in classes.names]
    if unknown:
        raise DataError(f"--held_out: '{unknown[0]}' is not a class of {args.class_name_file}")
    if data is None:
        if args.split == "robust":     # mentions grounded in the GT boxes (the original's algorithm)
            if not args.instances_json:
                raise DataError("--split robust without a split file needs --instances_json to regenerate it")
            boxes = BoxIndex.from_files(args.instances_json, classes)
            mentions = {im["id"]: matcher.mentioned_classes(im["captions"], boxes.present_classes(im["id"]))
                        for im in images}
            data = robust_split(mentions, max_test_images=args.robust_max_test, seed=args.seed)
        else:       # DCC: any caption naming a held-out class keeps its image out of training
            given = given or dcc_class_names(classes.names, args.class_name_file)
            mentions = {im["id"]: matcher.mentioned_classes(im["captions"]) for im in images}
            data = noc_split(mentions, [classes.index(n) for n in given], seed=args.seed)
            data["held_out"] = given
        if path:
            atomic_write_json(path, data)
    split = read_split(data, path or f"the generated {args.split} split", args.split)
    for im in images:
        im["split"] = split.split_of(im["id"])
    return noc_held_out(split, given, images, classes, matcher, path) if isinstance(split, NocSplit) else []


def noc_held_out(split: NocSplit, given: list[str], images: list[dict], classes: ClassNames,
                 matcher: VisualWordMatcher, path) -> list[str]:
    """--held_out, else the file's own list, else DCC's eight for the original's file, else the
    classes the split holds out (inferred)."""
    listed = list(split.held_out or [])
    if given and listed and sorted(given) != sorted(listed):
        warnings.warn(f"--held_out {','.join(given)} differs from the held-out list of {path} "
                      f"({','.join(listed)}); using --held_out")
    names = given or listed
    if not names and split.is_originals():
        names = dcc_class_names(classes.names, f"{path} (the original's NOC split)")
        print(f"{path}: the original's NOC split (no held-out list; val within val_train, test within "
              f"test_train): held-out classes are DCC's eight: {', '.join(names)}")
    if not names:
        captions = {im["id"]: im["captions"] for im in images}
        held = held_out_from_split(split, captions, classes, matcher)
        names = [classes.names[c - 1] for c in held]
        if names:
            print(f"{path}: no held-out list; held-out classes inferred from the split: {', '.join(names)}")
    if not names:
        raise DataError(f"{path}: NOC split with no held-out classes (no class is absent from the training "
                        "captions and mentioned by the novel images); pass --held_out")
    missing = [n for n in names if n not in classes.names]
    if missing:
        raise DataError(f"{path}: held-out class '{missing[0]}' is not in the class-name file")
    held = {classes.index(n) for n in names}
    seen = Counter(v.cls for im in images if im["split"] == "train" for c in im["captions"]
                   for v in matcher.match(c) if v.cls in held)
    for c, k in sorted(seen.items()):
        warnings.warn(f"{k} training captions mention held-out class '{classes.names[c - 1]}' "
                      "(through a fine-grained word or a plural): it is not novel for them")
    return names


if __name__ == "__main__":
    sys.exit(main())
