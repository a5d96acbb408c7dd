"""Proposals: torchvision Faster R-CNN, detection JSON import, and the original's h5 layout.

Row format everywhere: [x1, y1, x2, y2, class, score] in original-image pixels, where `class` is
the 1..C index of the class-name file line (NOT the COCO category id: issue #55 of the original).
Detector labels are mapped to it by category name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from misc.io import DataError
from misc.vocab import ClassNames

# torchvision's COCO label names that differ from the official COCO category names
_NAME_FIX = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch", "pottedplant": "potted plant",
             "diningtable": "dining table", "tvmonitor": "tv"}


class FasterRCNN:
    """torchvision fasterrcnn_resnet50_fpn_v2; weights from a local file or the enum (online)."""

    def __init__(self, classes: ClassNames, *, weights: str = "", device="cpu", score_thresh: float = 0.05,
                 max_det: int = 100, arch: str = "fasterrcnn_resnet50_fpn_v2"):
        from torchvision.models import detection
        enum = {"fasterrcnn_resnet50_fpn_v2": detection.FasterRCNN_ResNet50_FPN_V2_Weights,
                "fasterrcnn_resnet50_fpn": detection.FasterRCNN_ResNet50_FPN_Weights}[arch]
        names = enum.DEFAULT.meta["categories"]
        ctor = getattr(detection, arch)
        kwargs = dict(weights=None, weights_backbone=None, box_score_thresh=score_thresh,
                      box_detections_per_img=max_det, num_classes=len(names))
        self.model = ctor(**kwargs)
        if weights:
            path = Path(weights)
            if not path.is_file():
                raise DataError(f"detector weights not found: {path}")
            state = torch.load(path, map_location="cpu", weights_only=True)
            try:
                self.model.load_state_dict(state.get("model", state))
            except RuntimeError as err:
                raise DataError(f"{path}: not {arch} weights ({str(err).splitlines()[0]})") from None
        else:
            self.model.load_state_dict(enum.DEFAULT.get_state_dict(progress=True))
        self.model.eval().to(device)
        self.device = device
        index = {n: i + 1 for i, n in enumerate(classes.names)}
        self.label_to_class = np.zeros(len(names), dtype=np.int64)
        for label, name in enumerate(names):
            self.label_to_class[label] = index.get(_NAME_FIX.get(name, name), 0)

    @torch.no_grad()
    def __call__(self, images: list) -> list[np.ndarray]:
        """PIL RGB images -> per image (K, 6) rows sorted by score; unknown classes dropped."""
        tensors = [torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1).div(255).to(self.device)
                   for im in images]
        outs = self.model(tensors)
        rows = []
        for o in outs:
            cls = self.label_to_class[o["labels"].cpu().numpy()]
            keep = cls > 0
            r = np.concatenate([o["boxes"].cpu().numpy(), cls[:, None], o["scores"].cpu().numpy()[:, None]], 1)[keep]
            rows.append(r[np.argsort(-r[:, 5], kind="stable")].astype(np.float32))
        return rows


def detections_from_json(entries: list[dict], classes: ClassNames, path: str = "") -> dict[int, np.ndarray]:
    """coco-mini's detection JSON ({image_id, detections: [{bbox_xyxy, category_name, score}]})
    -> image id -> (K, 6) rows."""
    index = {n: i + 1 for i, n in enumerate(classes.names)}
    out = {}
    try:
        for e in entries:
            rows = []
            for d in e["detections"]:
                cls = index.get(_NAME_FIX.get(d["category_name"], d["category_name"]))
                if cls is None:
                    continue
                rows.append([*map(float, d["bbox_xyxy"]), cls, float(d["score"])])
            arr = np.array(rows, dtype=np.float32).reshape(-1, 6)
            out[int(e["image_id"])] = arr[np.argsort(-arr[:, 5], kind="stable")]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a detection JSON (image_id, detections[*].bbox_xyxy / category_name / score)") from None
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
