"""Proposals: torchvision Faster R-CNN, detection JSON import, and the original's h5 layout.

Row format everywhere: [x1, y1, x2, y2, class, score] in original-image pixels, where `class` is
the 1..C index of the class-name file line (NOT the COCO category id: issue #55 of the original).
Detector labels are mapped to it by category name.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from misc.io import DataError
from misc.proposals import validate_proposals
from misc.vocab import ClassNames

# torchvision's COCO label names that differ from the official COCO category names
_NAME_FIX = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
             "diningtable": "dining table", "tvmonitor": "tv"}


def name_list(names, limit: int = 6) -> str:
    """'a, b, c, ... (80 in all)' for one-line messages."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


class FasterRCNN:
    """torchvision fasterrcnn_resnet50_fpn_v2 trained on COCO; weights from a local file
    (`detector_weights`) or the weight enum (downloaded once into the torch hub cache).

    Its labels are mapped to the run's classes by name; a run that shares no class with the
    detector (the built-in world) is refused here, before any weights are read: it would
    caption every photo from zero proposals."""

    def __init__(self, classes: ClassNames, *, weights: str = "", device="cpu", score_thresh: float = 0.05,
                 max_det: int = 100, arch: str = "fasterrcnn_resnet50_fpn_v2"):
        from torchvision.models import detection

        from misc.weights import download_state_dict, read_state_dict
        enum = {"fasterrcnn_resnet50_fpn_v2": detection.FasterRCNN_ResNet50_FPN_V2_Weights,
                "fasterrcnn_resnet50_fpn": detection.FasterRCNN_ResNet50_FPN_Weights}[arch]
        names = [_NAME_FIX.get(n, n) for n in enum.DEFAULT.meta["categories"]]
        index = {n: i + 1 for i, n in enumerate(classes.names)}
        self.label_to_class = np.array([index.get(n, 0) for n in names], dtype=np.int64)
        if not self.label_to_class.any():
            raise DataError(f"this run knows classes {name_list(classes.names)}; the detector ({arch}, COCO) "
                            f"names {name_list(n for n in names if n not in ('__background__', 'N/A'))}: "
                            "none in common, so it cannot propose regions for this run")
        self.model = getattr(detection, arch)(weights=None, weights_backbone=None, box_score_thresh=score_thresh,
                                              box_detections_per_img=max_det, num_classes=len(names))
        what = f"{arch} detector"
        if weights:
            state = read_state_dict(weights, what=what, flag="--detector_weights")
        else:
            state = download_state_dict(enum.DEFAULT, what=what,
                                        remedy=f"pass --detector_weights PATH (a torchvision {arch} state dict)")
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            raise DataError(f"{weights or enum.DEFAULT}: not {arch} weights ({str(err).splitlines()[0]})") from None
        self.model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: list) -> list[np.ndarray]:
        """PIL RGB images -> per image (K, 6) rows sorted by score; classes the run lacks dropped."""
        tensors = [torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1).div(255).to(self.device)
                   for im in images]                                       # each (3, H, W) in [0, 1]
        outs = self.model(tensors)
        rows = []
        for o in outs:
            cls = self.label_to_class[o["labels"].cpu().numpy()]
            keep = cls > 0
            r = np.concatenate([o["boxes"].cpu().numpy(), cls[:, None], o["scores"].cpu().numpy()[:, None]], 1)[keep]
            rows.append(r[np.argsort(-r[:, 5], kind="stable")].astype(np.float32))
        return rows


def detections_from_json(entries: list[dict], classes: ClassNames, path: str = "") -> dict[int, np.ndarray]:
    """coco-mini's detection JSON ({image_id, width?, height?, detections: [{bbox_xyxy,
    category_name, score}]}) -> image id -> (K, 6) rows sorted by score.

    Detections of classes the run does not know are dropped with a warning naming them; a file of
    which no detection names a class of the run is an error (every caption would be made from no
    regions). Rows that fail validate_proposals (NaN, x1 > x2, outside the image) are dropped and
    counted in one warning."""
    index = {n: i + 1 for i, n in enumerate(classes.names)}
    out, unknown, bad, total = {}, {}, [], 0
    try:
        for e in entries:
            rows = []
            for d in e["detections"]:
                name = _NAME_FIX.get(d["category_name"], d["category_name"])
                total += 1
                if name not in index:
                    unknown[name] = unknown.get(name, 0) + 1
                    continue
                rows.append([*map(float, d["bbox_xyxy"]), index[name], float(d["score"])])
            w, h = float(e.get("width", np.inf)), float(e.get("height", np.inf))
            arr, problems = validate_proposals(np.array(rows, dtype=np.float64).reshape(-1, 6), w, h, classes.num_classes)
            bad += [f"image {e['image_id']} {p}" for p in problems]
            out[int(e["image_id"])] = arr[np.argsort(-arr[:, 5], kind="stable")]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a detection JSON (image_id, detections[*].bbox_xyxy / category_name / score)") from None
    if unknown and sum(unknown.values()) == total:
        raise DataError(f"this run knows classes {name_list(classes.names)}; the detections in {path} "
                        f"name {name_list(sorted(unknown, key=lambda n: -unknown[n]))}")
    if unknown:
        warnings.warn(f"{path}: dropped {sum(unknown.values())} of {total} detections of classes this run "
                      f"does not know ({name_list(sorted(unknown))})")
    if bad:
        warnings.warn(f"{path}: dropped {len(bad)} unusable detection rows (first: {bad[0]})")
    return out


def write_h5(path, rows: list[np.ndarray], max_det: int = 100) -> None:
    """The original's layout: dets_labels (N, max_det, 6), dets_num, nms_num (reference §1.1)."""
    import h5py

    from misc.io import atomic_path
    n = len(rows)
    labels = np.zeros((n, max_det, 6), dtype=np.float32)
    num = np.zeros(n, dtype=np.int64)
    for i, d in enumerate(rows):
        d = d[:max_det]
        labels[i, :len(d)] = d
        num[i] = len(d)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("dets_labels", data=labels)
            f.create_dataset("dets_num", data=num)
            f.create_dataset("nms_num", data=num)
