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
    problems: list[str] = []
    keep = np.ones(len(arr), dtype=bool)
    clipped = arr.copy()
    clipped[:, [0, 2]] = np.clip(arr[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(arr[:, [1, 3]], 0, height)
    for i, (x1, y1, x2, y2, cls, score) in enumerate(arr):
        reason = None
        if not np.all(np.isfinite(arr[i])):
            reason = "a value is NaN or infinite"
        elif x1 > x2 or y1 > y2:
            reason = f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has x1 > x2 or y1 > y2"
        elif cls != int(cls) or not 1 <= cls <= num_classes:
            reason = f"class {cls:g} is not one of 1..{num_classes}"
        elif x1 > width or x2 < 0 or y1 > height or y2 < 0:
            reason = f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width:g}x{height:g} image"
        if reason:
            problems.append(f"row {i}: {reason}")
            keep[i] = False
    return clipped[keep].astype(np.float32), problems
