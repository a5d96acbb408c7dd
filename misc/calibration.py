"""Detector score calibration: which detection scores are trustworthy enough to act on.

Two decisions of the original used absolute score thresholds that only mean something for the
detector they were tuned on: constrained beam search forces a mention of detections scoring above
0.8, and a proposal is a pointer target only when it scores at least 0.5. A smaller or differently
calibrated detector with lower scores loses most of its constraints and most of its pointer
targets (visual words then train as plain text). Here each threshold is derived from the data. On the training
images, a detection is *correct* when it overlaps a GT box of its class (IoU > 0.5); with the
detections sorted by score s_1 >= s_2 >= ...,

    precision(k) = (# correct among the top k) / k
    threshold    = s_k*   where k* = the largest k with precision(k) >= min_precision

i.e. the lowest score at which the detections at least as confident are still right
`min_precision` of the time. Any monotonic rescaling of the scores moves the threshold with them
and leaves the chosen constraints unchanged.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from nbt.misc.transforms import box_iou


def correct_detections(dets: np.ndarray, gt_boxes: np.ndarray, gt_cls: np.ndarray,
                       iou_thresh: float = 0.5) -> np.ndarray:
    """dets (K, 6) x1 y1 x2 y2 class score, GT (G, 4) / (G,) -> (K,) bool: overlaps a GT box of its class."""
    if len(dets) == 0 or len(gt_boxes) == 0:
        return np.zeros(len(dets), bool)
    iou = box_iou(dets[:, :4], gt_boxes)                                  # (K, G)
    same = dets[:, 4:5].astype(np.int64) == gt_cls[None, :].astype(np.int64)
    return ((iou > iou_thresh) & same).any(1)


def precision_threshold(scores: np.ndarray, correct: np.ndarray, min_precision: float) -> float:
    """The lowest score whose detections at least as confident are correct >= min_precision of
    the time; above every score (nothing trusted) when even the top detection is wrong."""
    if len(scores) == 0:
        return 1.0
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order].astype(np.float64)
    precision = np.cumsum(c) / np.arange(1, len(c) + 1)                   # (K,) precision of the top k
    level_end = np.nonzero(np.r_[s[1:] != s[:-1], True])[0]               # last index of each score value
    ok = level_end[precision[level_end] >= min_precision]
    if len(ok) == 0:
        return float(np.nextafter(s[0], np.inf))
    return float(s[ok[-1]])


def detection_scores(bundle, max_images: int = 5000) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and correctness of the detections on (up to `max_images` of) a data set's training
    images -> (scores (K,), correct (K,), images used). Needs the proposal h5 and GT instances."""
    from nbt.misc.detector import ProposalReader
    images = bundle.dic["images"]
    rows = bundle.rows("train")[:max_images]
    reader = ProposalReader(bundle.opt.proposal_h5, [int(im["id"]) for im in images],
                            bundle.classes.num_classes, warn=False)
    scores, correct = [np.zeros(0, np.float32)], [np.zeros(0, bool)]
    try:
        for r in rows:
            dets = reader.rows(r)
            gt_boxes, gt_cls = bundle.boxes.get(int(images[r]["id"]))[:2]
            scores.append(dets[:, 5])
            correct.append(correct_detections(dets, gt_boxes, gt_cls))
    finally:
        reader.close()
    return np.concatenate(scores), np.concatenate(correct), len(rows)


ORIGINAL_THRESHOLDS = {"cbs_score_thresh": 0.8, "pos_score_thresh": 0.5}   # the original's, for its detector
PRECISION_OF = {"cbs_score_thresh": "cbs_min_precision", "pos_score_thresh": "pos_min_precision"}


def resolve_score_thresholds(opt, bundle=None, keys=("pos_score_thresh", "cbs_score_thresh")):
    """Options with each score threshold in `keys` that is -1 ("calibrate") measured on `bundle`'s
    training detections; without data to measure on, the original's value with a warning."""
    todo = [k for k in keys if getattr(opt, k) < 0]
    if not todo:
        return opt
    usable = bundle is not None and not opt.det_oracle and Path(opt.proposal_h5).is_file() \
        and len(bundle.boxes.image_ids) and len(bundle.rows("train"))
    if not usable:
        values = {k: ORIGINAL_THRESHOLDS[k] for k in todo}
        print(f"warning: no training detections and GT boxes to calibrate {', '.join(todo)} on; using the "
              f"original's {', '.join(f'{k} {v}' for k, v in values.items())}", file=sys.stderr)
        return dataclasses.replace(opt, **values)
    key = (str(Path(opt.proposal_h5).resolve()), Path(opt.proposal_h5).stat().st_mtime_ns, opt.input_dic,
           tuple(opt.instances_json))
    if key not in _MEASURED:                        # one measurement per process and data set
        _MEASURED[key] = detection_scores(bundle)
    scores, correct, n = _MEASURED[key]
    quiet = all((key, k, getattr(opt, PRECISION_OF[k])) in _REPORTED for k in todo)
    values = {k: precision_threshold(scores, correct, getattr(opt, PRECISION_OF[k])) for k in todo}
    for k, v in values.items():
        if not quiet:
            print(f"{k} {v:.3f}: detections scoring at least this are right "
                  f"{100 * getattr(opt, PRECISION_OF[k]):.0f} % of the time on {n} training images")
        _REPORTED.add((key, k, getattr(opt, PRECISION_OF[k])))
    return dataclasses.replace(opt, **values)


_MEASURED: dict = {}
_REPORTED: set = set()
