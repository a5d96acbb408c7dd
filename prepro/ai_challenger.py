"""AI Challenger 2017 image Chinese captioning: its caption files, reference file and submissions.

The one place these formats are read (prepro_dic_coco.py --aic_json, tools/aic_eval.py):

    caption file     caption_train_annotations_20170902.json, caption_validation_annotations_*.json:
                     [{"url": ..., "image_id": "<sha1>.jpg", "caption": [5 raw Chinese strings]}]
                     (no spaces between words; some captions hold "\\n" or stray spaces)
    reference file   the official evaluation's COCO-format captions (data/id_to_words.json):
                     {"annotations": [{"caption": "一个 长 头发 的 女人 ...", "id", "image_id"}],
                      "images": [{"file_name": "<sha1>", "id"}] (an image listed once per caption), ...}
                     captions already segmented (words separated by spaces)
    submission       [{"image_id": "<sha1>", "caption": "raw Chinese"}], one per reference image

Image ids are the official evaluation's: int(sha256(name).hexdigest(), 16) % (2**63 - 1) of the
image's name without ".jpg" (its README's formula with Python 2's sys.maxint), so a dic made from
the caption files and the official reference file name the same images by the same numbers.

A submission is checked as the official evaluation checks it (its error cases: an empty
`image_id` or `caption`, a missing key, an image the reference file does not have, fewer or more
captions than images): each is a one-line DataError naming the file, the entry and the field,
where the official tool answers `error: 1`.
"""
from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from nbt.misc.io import DataError, read_json

MAXINT = 2 ** 63 - 1            # Python 2's sys.maxint on 64-bit machines (the official formula)


def image_hash(name: str) -> int:
    """The official image id of an image name ("<sha1>" or "<sha1>.jpg": the extension is dropped)."""
    stem = re.sub(r"\.jpe?g$", "", str(name), flags=re.IGNORECASE)
    return int(hashlib.sha256(stem.encode()).hexdigest(), 16) % MAXINT


def images_from_aic(paths: list[str], segment, seed: int = 123) -> list[dict]:
    """AI Challenger caption files -> image records {id, file_path, split, captions (token lists)}.
    Images of a file whose name holds 'train' are train; the others are halved into val and test
    (seeded), as prepro does with COCO captions files."""
    out: list[dict] = []
    for path in paths:
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: not an AI Challenger caption file (expected a list of "
                            "{url, image_id, caption} entries)")
        folder = re.sub(r"_annotations.*$", "", Path(path).stem)
        records = [_caption_entry(e, k, path, folder, segment) for k, e in enumerate(data)]
        if "train" in Path(path).stem:
            for r in records:
                r["split"] = "train"
        else:
            order = list(range(len(records)))
            random.Random(seed).shuffle(order)
            val = set(order[: len(order) // 2])
            for k, r in enumerate(records):
                r["split"] = "val" if k in val else "test"
        out += records
    seen: dict[int, str] = {}
    for r in out:
        if seen.setdefault(r["id"], r["file_path"]) != r["file_path"]:
            raise DataError(f"two images share the id {r['id']}: {seen[r['id']]} and {r['file_path']}")
    return out


def _caption_entry(entry, k: int, path, folder: str, segment) -> dict:
    if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
        raise DataError(f"{path}: entry {k} needs 'image_id' and 'caption'")
    name, captions = entry["image_id"], entry["caption"]
    if not isinstance(name, str) or not name:
        raise DataError(f"{path}: entry {k}: 'image_id' must be an image file name")
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{path}: entry {k} ({name}): 'caption' must be a list of strings")
    tokens = [segment(c) for c in captions]
    return {"id": image_hash(name), "file_path": f"{folder}/{name}", "captions": [t for t in tokens if t]}


class Reference:
    """The official evaluation's reference file: per image id, its name and segmented captions."""

    def __init__(self, path: str | Path):
        data = read_json(path)
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise DataError(f"{path}: not a COCO-format reference file (needs 'annotations' and 'images' lists)")
        self.path = str(path)
        self.names: dict[str, int] = {}                  # file name -> image id
        for k, im in enumerate(data["images"]):
            try:
                name, image_id = str(im["file_name"]), int(im["id"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: images[{k}] needs 'file_name' and an integer 'id'") from None
            if self.names.setdefault(name, image_id) != image_id:
                raise DataError(f"{path}: image {name} has two ids ({self.names[name]} and {image_id})")
        known = set(self.names.values())
        self.captions: dict[int, list[list[str]]] = {i: [] for i in known}
        for k, a in enumerate(data["annotations"]):
            try:
                image_id, caption = int(a["image_id"]), a["caption"]
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{path}: annotations[{k}] needs 'image_id' and 'caption'") from None
            if image_id not in known or not isinstance(caption, str):
                raise DataError(f"{path}: annotations[{k}]: image {image_id} is not in 'images' "
                                "or its caption is not a string")
            self.captions[image_id].append(caption.split())   # already segmented: words between spaces

    def read_submission(self, path: str | Path) -> dict[int, str]:
        """A submission -> {image id: raw caption}, checked as the official evaluation checks it."""
        data = read_json(path)
        if not isinstance(data, list):
            raise DataError(f"{path}: a submission is a list of {{image_id, caption}} entries")
        out: dict[int, str] = {}
        for k, entry in enumerate(data):
            if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
                missing = "image_id" if not isinstance(entry, dict) or "image_id" not in entry else "caption"
                raise DataError(f"{path}: entry {k} has no '{missing}'")
            name, caption = entry["image_id"], entry["caption"]
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"{path}: entry {k}: 'image_id' is empty (it must name an image)")
            if not isinstance(caption, str) or not caption.strip():
                raise DataError(f"{path}: entry {k} ({name}): 'caption' is empty")
            image_id = self.names.get(re.sub(r"\.jpe?g$", "", name.strip(), flags=re.IGNORECASE))
            if image_id is None:
                raise DataError(f"{path}: entry {k}: image '{name}' is not in the reference file {self.path}")
            if image_id in out:
                raise DataError(f"{path}: entry {k}: a second caption for image '{name}'")
            out[image_id] = caption
        absent = [n for n, i in self.names.items() if i not in out]
        if absent:
            raise DataError(f"{path}: {len(absent)} of the reference's {len(self.names)} images have no "
                            f"caption (e.g. {absent[0]}); the official evaluation scores only complete submissions")
        return out
