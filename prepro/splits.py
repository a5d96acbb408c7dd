"""Robust and NOC (novel object) split generation, shared by COCO and the built-in world.

Both take `mentions`: image id -> set of class indices (1..C) that the image's captions mention,
computed by `misc.vocab.VisualWordMatcher` or by the world generator: for robust, grounded in the
image's GT boxes (the original's algorithm); for NOC, any mention (DCC kept every image whose
captions name a held-out object out of training, so no training caption holds its words).

File formats are the original's (read by `read_split`, the one reader of both):
- robust: {"train_id": [{"img_id": N}, ...], "val_id": [...], "test_id": [...]} (files of earlier
  versions of this project hold plain ids in the lists: read too);
- NOC (DCC's): {"train", "val", "val_train", "test", "test_train"}: each {str(id): 1}; `val` /
  `test` hold the novel images (their captions mention a held-out class). Image -> split as the
  original's prepro: train; else val when in val or val_train; else test when in test or
  test_train; else rest (unused). In the original's `split_noc_coco.json`, val is a subset of
  val_train and test of test_train (DCC's val_val / val_test halves of val2014 and their novel
  images); in the files this project writes they are disjoint. The original's file has no list of
  the held-out classes; ours adds "held_out": [class names].
"""
from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nbt.misc.io import DataError

NOC_KEYS = ("train", "val", "val_train", "test", "test_train")
ROBUST_KEYS = {"train": "train_id", "val": "val_id", "test": "test_id"}


def robust_split(mentions: dict[int, set[int]], *, max_test_images: int, seed: int = 123,
                 val_fraction: float = 0.3) -> dict[str, list[int]]:
    """The robust split's co-occurrence algorithm, as published with NBT (CVPR 2018).

    Walk class pairs from least to most frequent; accept a pair as a test pair unless that pushes
    some class's count among test images above half its total count; stop once more than
    `max_test_images` test images are collected. Images holding an accepted pair form the test
    pool (shuffled with `seed`, split val_fraction / rest into val / test); the others are train.
    Test images therefore contain class pairs never seen together in training.
    """
    pair_count: Counter = Counter()
    class_total: Counter = Counter()
    for classes in mentions.values():
        class_total.update(classes)
        pair_count.update(itertools.combinations(sorted(classes), 2))
    images_with_pair: dict[tuple[int, int], list[int]] = {}
    for img, classes in mentions.items():
        for pair in itertools.combinations(sorted(classes), 2):
            images_with_pair.setdefault(pair, []).append(img)

    test_pool: set[int] = set()
    test_class: Counter = Counter()
    accepted: list[tuple[int, int]] = []
    for pair, _ in sorted(pair_count.items(), key=lambda kv: (kv[1], kv[0])):
        new_images = [i for i in images_with_pair[pair] if i not in test_pool]
        added: Counter = Counter()
        for i in new_images:
            added.update(mentions[i])
        if any(test_class[c] + added[c] > class_total[c] / 2 for c in added):
            continue
        accepted.append(pair)
        test_pool.update(new_images)
        test_class.update(added)
        if len(test_pool) > max_test_images:
            break
    # A train image must not hold an accepted pair: images_with_pair covers every holder.
    pool = sorted(test_pool)
    random.Random(seed).shuffle(pool)
    n_val = int(round(len(pool) * val_fraction))
    train = sorted(i for i in mentions if i not in test_pool)
    ids = {"train_id": train, "val_id": sorted(pool[:n_val]), "test_id": sorted(pool[n_val:])}
    return {**{k: [{"img_id": i} for i in v] for k, v in ids.items()},        # the original's entries
            "test_pairs": [list(p) for p in accepted]}


def noc_split(mentions: dict[int, set[int]], held_out: list[int], *, seed: int = 123,
              other_fraction: float = 0.1) -> dict[str, dict[str, int]]:
    """DCC-style novel-object split.

    Images whose captions mention a held-out class are "novel": they never enter training and are
    halved into val / test. Of the remaining images, `other_fraction` each go to val_train /
    test_train (the negatives that the F1 needs); the rest are train.
    """
    held = set(held_out)
    novel = sorted(i for i, c in mentions.items() if c & held)
    seen = sorted(i for i, c in mentions.items() if not c & held)
    rng = random.Random(seed)
    rng.shuffle(novel)
    rng.shuffle(seen)
    half = len(novel) // 2
    n_other = int(round(len(seen) * other_fraction))
    parts = {
        "val": novel[:half],
        "test": novel[half:],
        "val_train": seen[:n_other],
        "test_train": seen[n_other:2 * n_other],
        "train": seen[2 * n_other:],
    }
    return {k: {str(i): 1 for i in sorted(v)} for k, v in parts.items()}


@dataclass(frozen=True)
class RobustSplit:
    train: frozenset[int]
    val: frozenset[int]
    test: frozenset[int]

    def split_of(self, image_id: int) -> str:
        return next((n for n in ("train", "val", "test") if image_id in getattr(self, n)), "rest")


@dataclass(frozen=True)
class NocSplit:
    train: frozenset[int]
    val: frozenset[int]              # novel images of val
    val_train: frozenset[int]
    test: frozenset[int]             # novel images of test
    test_train: frozenset[int]
    held_out: tuple[str, ...] | None  # the file's own list (ours); None in DCC's / the original's

    @property
    def novel(self) -> frozenset[int]:
        return self.val | self.test

    def is_originals(self) -> bool:
        """The original's `split_noc_coco.json` (or a cut of it): no held-out list, and the novel
        images inside the *_train dicts (val within val_train, test within test_train)."""
        return self.held_out is None and bool(self.novel) and self.val <= self.val_train \
            and self.test <= self.test_train

    def split_of(self, image_id: int) -> str:
        if image_id in self.train:
            return "train"
        if image_id in self.val or image_id in self.val_train:
            return "val"
        if image_id in self.test or image_id in self.test_train:
            return "test"
        return "rest"


def read_split(data, path: str | Path, scheme: str) -> RobustSplit | NocSplit:
    """A robust or NOC split file's JSON (or a split just generated) -> its image-id sets; anything
    malformed is a one-line DataError naming the file and the key."""
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a {scheme} split file (a JSON object)")
    if scheme == "robust":
        return RobustSplit(**{name: _ids(data, key, path) for name, key in ROBUST_KEYS.items()})
    held = data.get("held_out")
    if held is not None and not (isinstance(held, list) and all(isinstance(n, str) for n in held)):
        raise DataError(f"{path}: 'held_out' is not a list of class names")
    return NocSplit(**{key: _ids(data, key, path) for key in NOC_KEYS},
                    held_out=tuple(held) if held is not None else None)


def _ids(data: dict, key: str, path) -> frozenset[int]:
    """The image ids under `key`: a dict {str(id): 1} (NOC) or a list of {"img_id": N} (robust) or
    of plain ids."""
    if key not in data:
        keys = NOC_KEYS if key in NOC_KEYS else tuple(ROBUST_KEYS.values())
        raise DataError(f"{path}: no '{key}' (a {'NOC' if key in NOC_KEYS else 'robust'} split file has "
                        f"the keys {', '.join(keys)})")
    value = data[key]
    if not isinstance(value, (dict, list)):
        raise DataError(f"{path}: '{key}' is a {type(value).__name__}, not a list or dict of image ids")
    out = set()
    for e in value:
        raw = e.get("img_id") if isinstance(e, dict) else e
        if not (isinstance(raw, str) and raw.isdigit() or isinstance(raw, int) and not isinstance(raw, bool)):
            hint = ' (the original\'s entries are {"img_id": N})' if key in ROBUST_KEYS.values() else ""
            raise DataError(f"{path}: '{key}' holds {str(e)[:60]}, not an image id{hint}")
        out.add(int(raw))
    return frozenset(out)


def held_out_from_split(split: NocSplit, captions: dict[int, list[list[str]]], classes,
                        matcher) -> list[int]:
    """The held-out classes of a DCC-style NOC split file that does not list them.

    Candidates: classes whose name (the class-file line's first word, as a visual word: "dog" in
    "a dog", not in "a hot dog") no caption of a training image uses (only `train`: in the
    original's file the novel images are in val_train / test_train too). Of those, the fewest that
    together are mentioned (any fine-grained word or plural) by every novel image (val, test),
    chosen greedily by the number of novel images they cover.

    Names rather than every word: DCC removed from training the images whose captions hold DCC's
    own word lists (bus: "bus", "busses", not "buses"), so a class file's wider synonyms and
    plurals still occur in DCC training captions; the class name itself does not.
    """
    named = {v.cls for i in split.train for toks in captions.get(i, []) for v in matcher.match(toks)
             if v.surface == classes.names[v.cls - 1]}                # "dog", not "hot dog" or "dogs"
    covers: dict[int, set[int]] = {}
    for i in sorted(split.novel):
        for c in matcher.mentioned_classes(captions.get(i, [])) - named:
            covers.setdefault(c, set()).add(i)
    held, left = [], set().union(*covers.values()) if covers else set()
    while left:      # most novel images still uncovered, then most in all, then first class
        best = max(sorted(covers), key=lambda c: (len(covers[c] & left), len(covers[c])))
        held.append(best)
        left -= covers[best]
    return sorted(held)
