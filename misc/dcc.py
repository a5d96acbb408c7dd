"""DCC's novel-object F1 (Hendricks et al., "Deep Compositional Captioning", CVPR 2016): the metric
of the NOC table of Neural Baby Talk, computed as DCC's `eval/eval_sentences.py` `F1` does.

For a held-out object o with DCC's word list W(o) and a generated caption c_k per image k:

    tokens(s) = split(lower(s) with every character outside [A-Za-z0-9 whitespace] removed)
    said(k)   = W(o) ∩ tokens(c_k) ≠ ∅
    tp = Σ_{k ∈ N(o)} n_k·said(k)     fn = Σ_{k ∈ N(o)} n_k·¬said(k)     fp = Σ_{k ∈ T(o)} n_k·said(k)
    P = tp / (tp + fp),   R = tp / (tp + fn),   F1 = 2PR / (P + R);   F1 = 0 when tp = 0

N(o) / T(o) are the object's novel / train images of the evaluated split. DCC reads them from the
`annotations` lists of its files `captions_split_set_<o>_val_<split>_{novel,train}2014.json` (the
original NBT from `<data_path>/coco_noc/annotations/`), one entry per reference caption, so an
image counts n_k times, n_k = its number of reference captions there (5 to 7 in COCO; with equal
counts this is the per-image F1). Without those files the two sets are derived as DCC built them:
the split's images whose reference captions (tokenised as above) hold a word of W(o) are N(o),
the others T(o), each counted once per reference caption.

The word lists are DCC's, not a class file's: "bus" is (bus, busses), without "buses".
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nbt.misc.io import DataError, read_json

# DCC's word list per held-out object: `rm_word_dict` of LisaAnne/DCC eval/eval_sentences.py, the
# same table in the original NBT's tools/sentence_gen_tools/coco_eval.py (data, copied as facts).
DCC_WORDS: dict[str, tuple[str, ...]] = {
    "bus": ("bus", "busses"),
    "bottle": ("bottle", "bottles"),
    "couch": ("couch", "couches", "sofa", "sofas"),
    "microwave": ("microwave", "microwaves"),
    "pizza": ("pizza", "pizzas"),
    "racket": ("racket", "rackets", "racquet", "racquets"),
    "suitcase": ("luggage", "luggages", "suitcase", "suitcases"),
    "zebra": ("zebra", "zebras"),
}
# DCC's object -> the class names that name it in a class-name file (COCO calls the racket
# "tennis racket"; the original's misc/utils.py lists "racket" and maps it to that class)
CLASS_NAMES = {o: (o,) for o in DCC_WORDS} | {"racket": ("tennis racket", "racket")}
DCC_ORDER = ("bottle", "bus", "couch", "microwave", "pizza", "racket", "suitcase", "zebra")


def dcc_object(class_name: str) -> str | None:
    """DCC's name of a class that is one of its eight held-out objects ("tennis racket" -> "racket")."""
    return next((o for o, names in CLASS_NAMES.items() if class_name in names), None)


def dcc_class_names(class_names, where: str) -> list[str]:
    """The class names of DCC's eight objects in a class list (in DCC_ORDER); a one-line error
    naming `where` when one of them is not a class."""
    out = []
    for o in DCC_ORDER:
        name = next((n for n in CLASS_NAMES[o] if n in class_names), None)
        if name is None:
            raise DataError(f"{where}: no class names DCC's held-out object '{o}' "
                            f"({' or '.join(CLASS_NAMES[o])}); give the held-out classes explicitly")
        out.append(name)
    return out


def dcc_tokens(sentence: str) -> list[str]:
    """DCC's `split_sent`: lower case, drop every character outside [A-Za-z0-9 whitespace], split."""
    return re.sub(r"[^A-Za-z0-9\s]+", "", sentence.lower()).split()


@dataclass(frozen=True)
class DccSets:
    """One object's novel and train images, each with its weight n_k (reference captions)."""
    novel: dict[int, int]
    train: dict[int, int]


def read_dcc_sets(folder: str | Path, obj: str, split: str) -> DccSets:
    """DCC's annotation files of one object and split ('val' -> val_val, 'test' -> val_test)."""
    sets = []
    for part in ("novel", "train"):
        path = Path(folder) / f"captions_split_set_{obj}_val_{split}_{part}2014.json"
        if not path.is_file():
            raise DataError(f"DCC annotation file not found: {path} (dcc_annotations names DCC's folder)")
        data = read_json(path)
        anns = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(anns, list):
            raise DataError(f"{path}: no 'annotations' list (not a COCO captions file)")
        try:
            sets.append(dict(Counter(int(a["image_id"]) for a in anns)))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: an 'annotations' entry has no integer 'image_id'") from None
    return DccSets(novel=sets[0], train=sets[1])


def derive_dcc_sets(refs: dict[int, list[str]], obj: str) -> DccSets:
    """The sets as DCC built them, from the split's reference captions."""
    words = set(DCC_WORDS[obj])
    novel = {k: len(r) for k, r in refs.items() if any(words & set(dcc_tokens(s)) for s in r)}
    return DccSets(novel=novel, train={k: len(r) for k, r in refs.items() if k not in novel})


def dcc_f1(captions: dict[int, str], sets: DccSets, obj: str) -> dict:
    """DCC's F1 of one object over the captioned images of its sets (the module docstring)."""
    words = set(DCC_WORDS[obj])
    said = {k: bool(words & set(dcc_tokens(c))) for k, c in captions.items()}
    tp = sum(n for k, n in sets.novel.items() if said.get(k))
    fn = sum(n for k, n in sets.novel.items() if k in said and not said[k])
    fp = sum(n for k, n in sets.train.items() if said.get(k))
    precision = tp / (tp + fp) if tp else 0.0
    recall = tp / (tp + fn) if tp else 0.0
    return {"f1": 2 * precision * recall / (precision + recall) if tp else 0.0,
            "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn,
            "novel_images": sum(k in said for k in sets.novel), "train_images": sum(k in said for k in sets.train),
            "uncaptioned_images": sum(k not in said for k in (*sets.novel, *sets.train))}
