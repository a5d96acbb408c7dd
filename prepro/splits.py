"""Robust and NOC (novel object) split generation, shared by COCO and the built-in world.

Both take `mentions`: image id -> set of class indices (1..C) that the image's captions mention,
computed by `misc.vocab.VisualWordMatcher` or by the world generator: for robust, grounded in the
image's GT boxes (the original's algorithm); for NOC, any mention (DCC kept every image whose
captions name a held-out object out of training, so no training caption holds its words).

File formats are the original's:
- robust: {"train_id": [ids], "val_id": [ids], "test_id": [ids]}
- NOC (DCC style): {"train", "val", "val_train", "test", "test_train"}: each {str(id): 1}; `val` /
  `test` hold the novel images (their captions mention a held-out class), the others none. The
  original's file has no list of the held-out classes; ours adds "held_out": [class names].
"""
from __future__ import annotations

import itertools
import random
from collections import Counter

NOC_KEYS = ("train", "val", "val_train", "test", "test_train")


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
    return {"train_id": train, "val_id": sorted(pool[:n_val]), "test_id": sorted(pool[n_val:]),
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


def split_of_image(split_file: dict, image_id: int, scheme: str) -> str:
    """Split name of one image under a robust or NOC split file; 'rest' when unused."""
    key = str(image_id)
    if scheme == "robust":
        for name in ("train", "val", "test"):
            if image_id in split_file["_sets"][name]:
                return name
        return "rest"
    if scheme == "noc":
        if key in split_file["train"]:
            return "train"
        if key in split_file["val"] or key in split_file["val_train"]:
            return "val"
        if key in split_file["test"] or key in split_file["test_train"]:
            return "test"
        return "rest"
    raise ValueError(f"unknown split scheme {scheme!r}")


def index_robust(split_file: dict) -> dict:
    """Add set views of a robust split file for fast membership tests."""
    split_file = dict(split_file)
    split_file["_sets"] = {n: {int(i) for i in split_file[f"{n}_id"]} for n in ("train", "val", "test")}
    return split_file


def held_out_from_split(split_file: dict, captions: dict[int, list[list[str]]], classes,
                        matcher) -> list[int]:
    """The held-out classes of a NOC split file that does not list them (the original's).

    Candidates: classes whose name (the class-file line's first word, as a visual word: "dog" in
    "a dog", not in "a hot dog") no caption of a non-novel image (train, val_train, test_train)
    uses. Of
    those, the fewest that together are mentioned (any fine-grained word or plural) by every novel
    image (val, test), chosen greedily by the number of novel images they cover.

    Names rather than every word: DCC removed from training the images whose captions hold DCC's
    own word lists (bus: "bus", "busses", not "buses"), so a class file's wider synonyms and
    plurals still occur in DCC training captions; the class name itself does not.
    """
    novel = [int(i) for k in ("val", "test") for i in split_file[k]]
    seen = [int(i) for k in ("train", "val_train", "test_train") for i in split_file[k]]
    named = {v.cls for i in seen for toks in captions.get(i, []) for v in matcher.match(toks)
             if v.surface == classes.names[v.cls - 1]}                # "dog", not "hot dog" or "dogs"
    covers: dict[int, set[int]] = {}
    for i in novel:
        for c in matcher.mentioned_classes(captions.get(i, [])) - named:
            covers.setdefault(c, set()).add(i)
    held, left = [], set().union(*covers.values()) if covers else set()
    while left:      # most novel images still uncovered, then most in all, then first class
        best = max(sorted(covers), key=lambda c: (len(covers[c] & left), len(covers[c])))
        held.append(best)
        left -= covers[best]
    return sorted(held)
