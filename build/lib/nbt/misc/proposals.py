"""Proposal rows [x1, y1, x2, y2, class, score]: the one check every entry point applies.

Rows come from callers of the API, detection JSON files, the detection h5 and the detector. A row
is usable when its six values are finite, x1 <= x2 and y1 <= y2, its class is an integer in
1..C (a line of the class-name file) and its box, clipped to the image [0, W] x [0, H], still
touches the image. A NaN or infinite coordinate must never reach torchvision's roi_align (it
crashes the process), an out-of-range class never the class embedding (IndexError).

    clean, problems = validate_proposals(rows, width, height, num_classes)
    problems: ["row 3: coordinate is NaN or infinite", ...]; clean: the usable rows, clipped.
The caller decides: the API refuses input with problems, files from a detector drop the rows.
"""
from __future__ import annotations

import numpy as np


def validate_proposals(rows, width: float, height: float, num_classes: int) -> tuple[np.ndarray, list[str]]:
    """rows: anything array-like of shape (K, 6) -> (clean (K', 6) float32 rows, problems)."""
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return np.zeros((0, 6), np.float32), ["not an array of numbers"]
    if arr.size == 0:
        return np.zeros((0, 6), np.float32), []
    if arr.ndim != 2 or arr.shape[1] != 6:
        return np.zeros((0, 6), np.float32), [f"expected rows of 6 values [x1, y1, x2, y2, class, score], "
                                              f"got an array of shape {tuple(arr.shape)}"]
    keep = usable(arr, num_classes, width, height)                       # (K,)
    problems = [f"row {i}: {_reason(arr[i], width, height, num_classes)}" for i in np.nonzero(~keep)[0]]
    clean = arr[keep]
    clean[:, [0, 2]] = np.clip(clean[:, [0, 2]], 0, width)
    clean[:, [1, 3]] = np.clip(clean[:, [1, 3]], 0, height)
    return clean.astype(np.float32), problems


def usable(rows: np.ndarray, num_classes: int, width: float = np.inf, height: float = np.inf) -> np.ndarray:
    """(K, 6) rows -> (K,) bool: finite, x1 <= x2, y1 <= y2, class an integer in 1..C, touching
    the [0, width] x [0, height] image."""
    x1, y1, x2, y2, cls = (rows[:, i] for i in range(5))
    with np.errstate(invalid="ignore"):
        return np.isfinite(rows).all(1) & (x1 <= x2) & (y1 <= y2) & (cls == np.round(cls)) & (cls >= 1) \
            & (cls <= num_classes) & (x1 <= width) & (x2 >= 0) & (y1 <= height) & (y2 >= 0)


def _reason(row, width: float, height: float, num_classes: int) -> str:
    x1, y1, x2, y2, cls, _ = row
    if not np.isfinite(row).all():
        return "a value is NaN or infinite"
    if x1 > x2 or y1 > y2:
        return f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has x1 > x2 or y1 > y2"
    if cls != int(cls) or not 1 <= cls <= num_classes:
        return f"class {cls:g} is not one of 1..{num_classes}"
    return f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width:g}x{height:g} image"
