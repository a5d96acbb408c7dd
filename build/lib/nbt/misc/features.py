"""Cached region features: the frozen CNN's output for every dic image, computed once
(prepro/prepro_features.py), so training and evaluation run the decoder only (the original ran a
ResNet-101 forward, a JPEG decode and RoIAlign on every step; NBT never fine-tunes the CNN).

Per image, at the evaluation transform (resized to image_crop_size x image_crop_size):
    grid    the conv map, D x h x w                       (what the decoder attends over)
    pooled  RoIAlign (pooling/roi_align.py) of each of its R proposals, R x D

Layout of a cache directory:
    features.npy   (N, D, h*w + R) float16 (float32 on request), memory-mapped: row i = image i's grid cells, then its
                   R pooled proposals (zeros after its own n_i <= R)
    proposals.npy  (N, R, 6) float32: the proposals they were pooled at, in crop pixels, so the
                   loader can check they are still the proposals it reads
    meta.json      {"rows", "channels", "grid": [h, w], "regions": R, "num": [n_i], "sizes":
                    [[width, height]], "backbone", "image_crop_size", "det_oracle", "proposal_h5"}

Size per image: 2 (D (h*w + R)) + 24 R bytes. COCO (ResNet-101, 512 px, R = 100): D = 2048,
h = w = 16 -> 1,458,176 + 2,400 bytes = 1.39 MiB per image, 168 GiB for 123,287 images.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from nbt.misc.io import DataError, read_json


class CachedImage(NamedTuple):
    grid: torch.Tensor          # (D, h, w) float32
    pooled: torch.Tensor        # (n, D) float32
    proposals: np.ndarray       # (n, 6) float32, crop pixels
    size: tuple[int, int]       # the image's (width, height)


class FeatureCache:
    def __init__(self, root: str | Path):
        root = Path(root)
        if not (root / "features.npy").is_file() and (root / "conv.npy").is_file():
            raise DataError(f"{root}: a conv-map cache of an older version; rebuild it with "
                            f"prepro/prepro_features.py (it now stores pooled region features too)")
        self.root = root
        self.meta = read_json(root / "meta.json")
        try:
            self.feats = np.load(root / "features.npy", mmap_mode="r")
            self.props = np.load(root / "proposals.npy", mmap_mode="r")
        except (OSError, ValueError):
            raise DataError(f"cannot read cached features in {root} (features.npy, proposals.npy)") from None
        m = self.meta
        if self.feats.shape[0] != m["rows"] or self.props.shape[0] != m["rows"]:
            raise DataError(f"{root}: features.npy has {self.feats.shape[0]} rows, meta.json says {m['rows']}")
        self.grid_shape = (int(m["channels"]), *map(int, m["grid"]))
        self.num = np.asarray(m["num"], np.int64)                  # arrays: nothing per image for
        self.sizes = np.asarray(m["sizes"], np.int64).reshape(-1, 2)   # a forked worker to copy

    def check(self, *, image_crop_size: int, backbone: str, rows: int) -> None:
        m, root = self.meta, self.root
        if m["image_crop_size"] != image_crop_size or m["backbone"] != backbone:
            raise DataError(f"{root}: built for {m['backbone']} at {m['image_crop_size']} px, the options ask for "
                            f"{backbone} at {image_crop_size} px; rebuild it with prepro/prepro_features.py")
        if m["rows"] != rows:
            raise DataError(f"{root}: {m['rows']} images cached, the dic has {rows}")

    def get(self, row: int) -> CachedImage:
        D, h, w = self.grid_shape
        n = int(self.num[row])
        feat = np.array(self.feats[row], dtype=np.float32)               # (D, h*w + R), a copy
        grid = torch.from_numpy(np.ascontiguousarray(feat[:, :h * w])).view(D, h, w)
        pooled = torch.from_numpy(np.ascontiguousarray(feat[:, h * w:h * w + n].T))   # (n, D)
        size = (int(self.sizes[row, 0]), int(self.sizes[row, 1]))
        return CachedImage(grid, pooled, np.array(self.props[row, :n], np.float32), size)
