"""Detector score calibration: which detection scores are trustworthy enough to force a mention.

Constrained beam search (unique / novel modes) turns confident detections into words the caption
must contain. The original used an absolute score threshold (0.8), which only means something for
the detector it was tuned on: a smaller or differently calibrated detector with lower scores loses
most of its constraints. Here the threshold is derived from the data instead. On the training
images, a detection is *correct* when it overlaps a GT box of its class (IoU > 0.5); with the
detections sorted by score s_1 >= s_2 >= ...,

    precision(k) = (# correct among the top k) / k
    threshold    = s_k*   where k* = the largest k with precision(k) >= min_precision

i.e. the lowest score at which the detections at least as confident are still right
`min_precision` of the time. Any monotonic rescaling of the scores moves the threshold with them
and leaves the chosen constraints unchanged.
"""
from __future__ import annotations

import numpy as np

from misc.transforms import box_iou


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


def calibrate_cbs_threshold(bundle, min_precision: float, max_images: int = 5000) -> tuple[float, int]:
    """The CBS score threshold of a data set's detector, measured on (up to `max_images` of) its
    training images -> (threshold, images used). Needs the proposal h5 and GT instances."""
    from misc.detector import ProposalReader
    images = bundle.dic["images"]
    rows = bundle.rows("train")[:max_images]
    reader = ProposalReader(bundle.opt.proposal_h5, [int(im["id"]) for im in images],
                            bundle.classes.num_classes, warn=False)
    scores, correct = [], []
    try:
        for r in rows:
            dets = reader.rows(r)
            gt_boxes, gt_cls = bundle.boxes.get(int(images[r]["id"]))[:2]
            scores.append(dets[:, 5])
            correct.append(correct_detections(dets, gt_boxes, gt_cls))
    finally:
        reader.close()
    if not scores:
        return 1.0, 0
    return precision_threshold(np.concatenate(scores), np.concatenate(correct), min_precision), len(rows)


ORIGINAL_THRESHOLD = 0.8      # the original's fixed CBS score threshold (its own detector's scale)


def resolve_cbs_threshold(opt, bundle=None):
    """Options with `cbs_score_thresh` measured (when it is -1, "calibrate") on `bundle`'s training
    images; without the data to measure on, the original's 0.8 with a warning."""
    import dataclasses
    import sys
    from pathlib import Path
    if opt.cbs_score_thresh >= 0:
        return opt
    usable = bundle is not None and not opt.det_oracle and Path(opt.proposal_h5).is_file() \
        and len(bundle.boxes.image_ids) and bundle.rows("train")
    if not usable:
        print(f"warning: no training detections and GT boxes to calibrate the CBS score threshold on; "
              f"using the original's {ORIGINAL_THRESHOLD}", file=sys.stderr)
        return dataclasses.replace(opt, cbs_score_thresh=ORIGINAL_THRESHOLD)
    thresh, n = calibrate_cbs_threshold(bundle, opt.cbs_min_precision)
    print(f"CBS score threshold {thresh:.3f}: detections scoring at least this are right "
          f"{100 * opt.cbs_min_precision:.0f} % of the time on {n} training images")
    return dataclasses.replace(opt, cbs_score_thresh=thresh)
