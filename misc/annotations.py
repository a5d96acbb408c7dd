"""COCO instance annotations as a compact, read-only box index.

The original loaded both COCO instance files with pycocotools inside every DataLoader (and so in
every worker). Here they are read once, reduced to numpy arrays (boxes x1y1x2y2, class index 1..C,
fine-grained word index or -1, image sizes) and shared by forked workers without copies. Parsing
COCO's instances json costs tens of seconds and gigabytes; `BoxIndex.load` keeps the arrays in a
small .npz cache (misc/npz_cache.py) keyed on the json files and the class list.

Attributes of an annotation (`attributes`, not COCO's: the built-in world's, Visual Genome-style
data) make its attribute group: boxes with the same attributes form one group, and the attribute
values are words a caption may use ("two red rings"). `kind` is the object's fine-grained word.
`entity` names the object a caption's phrase refers to (converted Flickr30k Entities data: all boxes
of one coreference chain share it); it is an identifier, not a word, and a caption names it through
its own `refs` (misc/captions.py), so that a visual word's positives are that object's boxes.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nbt.misc import npz_cache
from nbt.misc.io import DataError, read_json
from nbt.misc.vocab import ClassNames

CACHE_VERSION = 2


class ImageSizes(Mapping):
    """image id -> (width, height), over two sorted arrays (no per-image Python objects)."""

    def __init__(self, ids: np.ndarray, wh: np.ndarray):
        order = np.argsort(ids, kind="stable")
        self.ids, self.wh = ids[order].astype(np.int64), wh[order].astype(np.int64).reshape(-1, 2)

    @staticmethod
    def from_dict(sizes: dict) -> "ImageSizes":
        ids = np.array(list(sizes), np.int64)
        return ImageSizes(ids, np.array([sizes[int(i)] for i in ids], np.int64).reshape(-1, 2))

    def __getitem__(self, image_id: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.ids, image_id))
        if k >= len(self.ids) or self.ids[k] != image_id:
            raise KeyError(image_id)
        return int(self.wh[k, 0]), int(self.wh[k, 1])

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return (int(i) for i in self.ids)


class BoxIndex:
    def __init__(self, image_ids: np.ndarray, offsets: np.ndarray, boxes: np.ndarray,
                 classes: np.ndarray, fine: np.ndarray, sizes: Mapping[int, tuple[int, int]],
                 group: np.ndarray | None = None, group_words: list[frozenset] | None = None,
                 entity: np.ndarray | None = None, entity_names: list[str] | None = None):
        self.image_ids = image_ids            # (I,) sorted
        self.offsets = offsets                # (I + 1,) start of each image's rows
        self.boxes = boxes                    # (N, 4) float32 x1 y1 x2 y2
        self.classes = classes                # (N,) int64 1..C
        self.fine = fine                      # (N,) int64 fine-grained index (world) or -1
        self.sizes = sizes if isinstance(sizes, ImageSizes) else ImageSizes.from_dict(dict(sizes))
        # (N,) attribute group (same kind and colour = same group; world only) or -1
        self.group = np.full(len(classes), -1, np.int64) if group is None else group
        # group id -> its attribute values as words ({"red", "gem"}), and all such words
        self.group_words = list(group_words or [])
        self.attribute_words = frozenset().union(*self.group_words)
        # (N,) the object (entity) a box belongs to, -1 none; entity code -> its name ("283585")
        self.entity = np.full(len(classes), -1, np.int64) if entity is None else entity
        self.entity_names = list(entity_names or [])
        self._entity_codes: dict[str, int] | None = None

    def get(self, image_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """boxes (G, 4), classes (G,), fine-grained index (G,), attribute group (G,)."""
        k = np.searchsorted(self.image_ids, image_id)
        if k >= len(self.image_ids) or self.image_ids[k] != image_id:
            z = np.zeros(0, np.int64)
            return np.zeros((0, 4), np.float32), z, z, z
        s, e = self.offsets[k], self.offsets[k + 1]
        return self.boxes[s:e], self.classes[s:e], self.fine[s:e], self.group[s:e]

    def entities(self, image_id: int) -> np.ndarray:
        """(G,) the entity code of each of the image's boxes (as `get` orders them), -1 none."""
        k = np.searchsorted(self.image_ids, image_id)
        if k >= len(self.image_ids) or self.image_ids[k] != image_id:
            return np.zeros(0, np.int64)
        return self.entity[self.offsets[k]:self.offsets[k + 1]]

    def entity_code(self, name: str) -> int:
        """The code of an entity name (a caption's ref), -1 when no box carries it."""
        if self._entity_codes is None:
            self._entity_codes = {n: i for i, n in enumerate(self.entity_names)}
        return self._entity_codes.get(str(name), -1)

    def present_classes(self, image_id: int) -> set[int]:
        return set(int(c) for c in self.get(image_id)[1])

    @staticmethod
    def empty() -> "BoxIndex":
        z = np.zeros(0, np.int64)
        return BoxIndex(z, np.zeros(1, np.int64), np.zeros((0, 4), np.float32), z, z, {})

    # -- cache ---------------------------------------------------------------------------------
    @staticmethod
    def cache_key(paths: list[str | Path], classes: ClassNames, max_boxes: int = 100) -> str:
        """Changes when an instances file is rewritten (size, mtime) or the class list changes."""
        for p in paths:
            if not Path(p).is_file():
                raise DataError(f"file not found: {p}")
        return json.dumps({"version": CACHE_VERSION, "instances": [npz_cache.file_stamp(p) for p in paths],
                           "classes": npz_cache.digest([classes.names, classes.words]), "max_boxes": max_boxes})

    @staticmethod
    def load(paths: list[str | Path], classes: ClassNames, cache: str | Path | None = None,
             max_boxes: int = 100) -> "BoxIndex":
        """from_files, through the .npz cache at `cache` (rebuilt when the key differs)."""
        if cache is None:
            return BoxIndex.from_files(paths, classes, max_boxes)
        key = BoxIndex.cache_key(paths, classes, max_boxes)
        arrays = npz_cache.load(cache, key)
        if arrays is not None:
            return BoxIndex.from_arrays(arrays)
        index = BoxIndex.from_files(paths, classes, max_boxes)
        npz_cache.save(cache, key, index.arrays())
        return index

    def arrays(self) -> dict[str, np.ndarray]:
        words = json.dumps([sorted(w) for w in self.group_words])
        return {"image_ids": self.image_ids, "offsets": self.offsets, "boxes": self.boxes,
                "classes": self.classes, "fine": self.fine, "group": self.group,
                "size_ids": self.sizes.ids, "size_wh": self.sizes.wh, "group_words": np.array(words),
                "entity": self.entity, "entity_names": np.array(json.dumps(self.entity_names))}

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray]) -> "BoxIndex":
        words = [frozenset(w) for w in json.loads(str(a["group_words"]))]
        return BoxIndex(a["image_ids"], a["offsets"], a["boxes"], a["classes"], a["fine"],
                        ImageSizes(a["size_ids"], a["size_wh"]), a["group"], words,
                        a["entity"], json.loads(str(a["entity_names"])))

    @staticmethod
    def from_files(paths: list[str | Path], classes: ClassNames, max_boxes: int = 100) -> "BoxIndex":
        rows: dict[int, list[tuple]] = {}
        sizes: dict[int, tuple[int, int]] = {}
        name_to_cls = {n: i + 1 for i, n in enumerate(classes.names)}
        fine_index = {w: i for i, w in enumerate(classes.fine_words)}
        groups: dict[tuple, int] = {}
        entities: dict[str, int] = {}
        for path in paths:
            data = read_json(path)
            if not isinstance(data, dict) or "annotations" not in data or "categories" not in data:
                raise DataError(f"{path}: not a COCO instances file (needs 'annotations' and 'categories')")
            cat_map = _category_map(data["categories"], name_to_cls, path)
            for im in data.get("images", []):
                width, height = int(im.get("width") or 0), int(im.get("height") or 0)
                if width > 0 and height > 0:         # an image without its size: proposals are not clipped
                    sizes[int(im["id"])] = (width, height)
            for a in data["annotations"]:
                cls = cat_map.get(a["category_id"])
                if cls is None:
                    continue
                x, y, w, h = a["bbox"]
                if w <= 0 or h <= 0:
                    continue
                attrs = a.get("attributes") or {}
                group = groups.setdefault(tuple(sorted(attrs.items())), len(groups)) if attrs else -1
                entity = entities.setdefault(str(attrs["entity"]), len(entities)) if "entity" in attrs else -1
                rows.setdefault(int(a["image_id"]), []).append(
                    (x, y, x + w, y + h, cls, fine_index.get(attrs.get("kind"), -1), group, entity))
        ids = np.array(sorted(rows), dtype=np.int64)
        offsets = [0]
        flat: list[tuple] = []
        for i in ids:
            r = rows[int(i)][:max_boxes]
            flat.extend(r)
            offsets.append(len(flat))
        arr = np.array(flat, dtype=np.float64).reshape(-1, 8)
        group_words = [frozenset(str(v).lower() for k, v in key if k != "entity") for key in groups]   # in id order
        return BoxIndex(ids, np.array(offsets, dtype=np.int64), arr[:, :4].astype(np.float32),
                        arr[:, 4].astype(np.int64), arr[:, 5].astype(np.int64), sizes,
                        arr[:, 6].astype(np.int64), group_words, arr[:, 7].astype(np.int64), list(entities))


def _category_map(categories: list[dict], name_to_cls: dict[str, int], path) -> dict[int, int]:
    """COCO category id -> class index 1..C, by name; by id order when names do not match."""
    out, unmatched = {}, []
    for c in categories:
        name = " ".join(str(c["name"]).lower().split())
        if name in name_to_cls:
            out[c["id"]] = name_to_cls[name]
        else:
            unmatched.append(c)
    if unmatched and len(categories) == len(name_to_cls):
        # Class file without category names in front (the original's): fall back to id order.
        return {c["id"]: i + 1 for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))}
    if unmatched:
        warnings.warn(f"{path}: {len(unmatched)} categories have no line in the class-name file "
                      f"(e.g. '{unmatched[0]['name']}'); their boxes are ignored")
    return out
