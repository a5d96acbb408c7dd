"""What a decoder attends over, as typed objects: one row per image after encoding, one row per
caption (teacher forcing) or per beam (decoding) after `expand` / `rows`.

Every tensor field (nested ones included) has the batch as its first dimension, so the few
operations decoding needs are written once, over the fields: `expand(n)` repeats each image n times, `rows(img)` gathers the
rows of the images `img`, `detach()` and `float()` map every tensor. Fields that are None stay None.

    RegionFeatures   NBT and the plain top-down decoder: global, grid and region vectors, their
                     attention keys, the regions' classes and mask
    ImageFeature     Show-and-Tell: one image vector
    RefinedFeatures  AoANet: the refined [grid ; regions] vectors, their mask and mean

Only RegionFeatures has regions a decoder can point at (`num_regions` > 0); the others report
`num_regions == 0`, and decoding then runs without pointers and slots.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

Tensor = torch.Tensor


def _map_fields(obj, fn: Callable[[Tensor], Tensor]):
    """A copy of dataclass obj with fn applied to its tensors, and to those of dataclass fields."""
    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if torch.is_tensor(v):
            changes[f.name] = fn(v)
        elif dataclasses.is_dataclass(v):
            changes[f.name] = _map_fields(v, fn)
    return dataclasses.replace(obj, **changes)


@dataclass
class Encoded:
    """Base: the operations over tensor fields; `num_regions` 0 (nothing to point at)."""

    def _map(self, fn: Callable[[Tensor], Tensor]):
        return _map_fields(self, fn)

    def _first(self) -> Tensor:
        return next(v for f in dataclasses.fields(self) if torch.is_tensor(v := getattr(self, f.name)))

    @property
    def batch(self) -> int:
        return self._first().shape[0]

    @property
    def device(self) -> torch.device:
        return self._first().device

    @property
    def num_regions(self) -> int:
        return 0

    def expand(self, n: int):
        """Each image's row repeated n times (its captions, or its beams), in image order."""
        return self._map(lambda v: v.repeat_interleave(n, dim=0))

    def rows(self, img: Tensor):
        """The rows of images img (n,): row i holds image img[i]."""
        return self._map(lambda v: v[img])

    def detach(self):
        return self._map(Tensor.detach)

    def float(self):
        """Floating tensors in float32 (features encoded under autocast, before the search)."""
        return self._map(lambda v: v.float() if v.is_floating_point() else v)


@dataclass
class GroupLogits:
    """Region grouping's pair logits (training loss only; decoding never reads them)."""
    logits: Tensor                 # (B, R, R) same-group logit of each region pair
    valid: Tensor                  # (B, R, R) pairs that are scored (same class, both real)


@dataclass
class RegionFeatures(Encoded):
    fc: Tensor                     # (B, H) global vector (mean of the grid)
    grid: Tensor                   # (B, N, H) conv cells
    regions: Tensor                # (B, R, H) region vectors, zero for padding
    region_cls: Tensor             # (B, R) each region's class, 0 for padding
    region_mask: Tensor            # (B, R) real proposals
    grid_keys: Tensor | None = None       # (B, N, A) attention keys, projected once per image
    region_keys: Tensor | None = None     # (B, R, A)
    pointer_keys: Tensor | None = None    # (B, R, A) NBT's pointer only
    fc_gates: Tensor | None = None        # (B, 4H) the attention LSTM's gate inputs from fc (decoding)
    groups: GroupLogits | None = None     # region grouping, while training

    @property
    def num_regions(self) -> int:
        return self.regions.shape[1]


@dataclass
class ImageFeature(Encoded):
    image: Tensor                  # (B, E) the image vector Show-and-Tell feeds once


@dataclass
class RefinedFeatures(Encoded):
    feats: Tensor                  # (B, N + R, H) refined grid and region vectors
    valid: Tensor                  # (B, N + R) real cells and proposals
    mean: Tensor                   # (B, H) mean of the valid refined vectors
