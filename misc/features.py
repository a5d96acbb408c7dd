"""Cached CNN conv maps: computed once (prepro/prepro_features.py), then training runs without the
CNN (the original ran a ResNet-101 forward and a JPEG decode on every step; MCAN's --PRELOAD idea).

Layout of a cache directory:
    conv.npy     (N, D, h, w) float16, memory-mapped, one row per dic image (eval transform)
    meta.json    {"rows": N, "shape": [D, h, w], "sizes": [[width, height], ...], "backbone": name,
                  "image_crop_size": S}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from misc.io import DataError, read_json


class FeatureCache:
    def __init__(self, root: str | Path):
        root = Path(root)
        self.meta = read_json(root / "meta.json")
        try:
            self.conv = np.load(root / "conv.npy", mmap_mode="r")
        except (OSError, ValueError):
            raise DataError(f"cannot read cached features {root / 'conv.npy'}") from None
        if self.conv.shape[0] != self.meta["rows"]:
            raise DataError(f"{root}: conv.npy has {self.conv.shape[0]} rows, meta.json says {self.meta['rows']}")

    def get(self, row: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.conv[row], dtype=np.float32))     # (D, h, w)

    def size(self, row: int) -> tuple[int, int]:
        w, h = self.meta["sizes"][row]
        return int(w), int(h)
