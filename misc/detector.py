"""Proposals: torchvision Faster R-CNN, detection JSON import, and the original's h5 layout.

Row format everywhere: [x1, y1, x2, y2, class, score] in original-image pixels, where `class` is
the 1..C index of the class-name file line (NOT the COCO category id: issue #55 of the original).
Detector labels are mapped to it by category name.

The h5 (the original's layout, reference §1.1): dets_labels (N, K, 6), dets_num (N,), nms_num (N,),
row i = the dic's image i; ours adds image_id (N,) so that rows are matched to the dic by id.
Every row read from an h5 or a detection JSON goes through `valid_rows`: finite values,
x1 <= x2, y1 <= y2, class in 1..C, clipped to the image when its size is known; the others are
dropped and counted (a NaN box reaching torchvision's roi_align can crash the process).
"""
from __future__ import annotations

import warnings
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
    """coco-mini's detection JSON ({image_id, [width, height,] detections: [{bbox_xyxy,
    category_name, score}]}) -> image id -> (K, 6) valid rows, by descending score. Detections of
    categories outside the class file are left out; invalid ones are dropped with one warning."""
    index = {n: i + 1 for i, n in enumerate(classes.names)}
    out, dropped, where = {}, 0, None
    try:
        for e in entries:
            rows = []
            for d in e["detections"]:
                cls = index.get(_NAME_FIX.get(d["category_name"], d["category_name"]))
                if cls is None:
                    continue
                box = list(d["bbox_xyxy"])
                rows.append([*map(float, box), cls, float(d["score"])] if len(box) == 4 else [np.nan] * 6)
            arr = np.array(rows, dtype=np.float32).reshape(-1, 6)
            size = (e["width"], e["height"]) if "width" in e and "height" in e else None
            arr, bad = valid_rows(arr, classes.num_classes, size)
            dropped += bad
            if bad and where is None:
                where = e["image_id"]
            out[int(e["image_id"])] = arr[np.argsort(-arr[:, 5], kind="stable")]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a detection JSON "
                        "(image_id, detections[*].bbox_xyxy / category_name / score)") from None
    if dropped:
        warnings.warn(f"{path}: dropped {dropped} invalid detections (non-finite, x2 < x1 or y2 < y1, "
                      f"or not 4 coordinates; first in image {where})")
    return out


def valid_rows(rows: np.ndarray, num_classes: int, size: tuple[float, float] | None = None
               ) -> tuple[np.ndarray, int]:
    """(K, 6) rows -> (the valid ones, clipped to the (width, height) `size` when given; how many
    were dropped). Valid: all six values finite, x1 <= x2, y1 <= y2, class an integer in 1..C."""
    if not len(rows):
        return rows, 0
    ok = _valid_mask(rows, num_classes)
    out = rows[ok]
    if size is not None and len(out):
        w, h = size
        out = out.copy()
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)                  # (K, 2) x1, x2
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)                  # (K, 2) y1, y2
    return out, int((~ok).sum())


def write_h5(path, rows: list[np.ndarray], max_det: int = 100, image_ids: list[int] | None = None) -> None:
    """The original's layout: dets_labels (N, max_det, 6), dets_num, nms_num (reference §1.1), plus
    image_id (N,) when given (the dic's image ids, row for row)."""
    import h5py

    from misc.io import atomic_path
    n = len(rows)
    if image_ids is not None and len(image_ids) != n:
        raise ValueError(f"write_h5: {len(image_ids)} image ids for {n} rows")
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
            if image_ids is not None:
                f.create_dataset("image_id", data=np.asarray(image_ids, np.int64))


class ProposalReader:
    """The rows of a proposal h5 for a dic's images: opened read-only, checked against the dic's
    image ids (`check_rows`), each image's rows validated (`valid_rows`) and counted when dropped."""

    def __init__(self, path, image_ids: list[int], num_classes: int, *, warn: bool = True):
        from misc.io import open_h5
        self.path, self.num_classes, self.warn = str(path), num_classes, warn
        self.f = open_h5(path, ("dets_labels",))
        try:
            check_rows(self.f, [int(i) for i in image_ids], self.path)
        except DataError:
            self.f.close()
            raise
        self.image_ids = list(image_ids)
        self.num = self.f["nms_num"][:] if "nms_num" in self.f else self.f["dets_num"][:]   # (N,)
        self.dropped = 0

    def rows(self, row: int, size: tuple[float, float] | None = None) -> np.ndarray:
        """(K, 6) valid rows of dic row `row`, clipped to the image's (width, height) when given."""
        n = int(self.num[row])
        dets = np.asarray(self.f["dets_labels"][row, :n], dtype=np.float32)
        dets, bad = valid_rows(dets, self.num_classes, size)
        if bad and not self.dropped and self.warn:
            warnings.warn(f"{self.path}: image {self.image_ids[row]} has {bad} invalid proposal rows "
                          "(non-finite, x2 < x1 or y2 < y1, or class outside 1..C); they are dropped")
        self.dropped += bad
        return dets

    def count_invalid(self, chunk: int = 4096) -> tuple[int, int]:
        """(invalid rows, images holding some) over the whole file, read in chunks."""
        labels, bad_rows, bad_images = self.f["dets_labels"], 0, 0
        for s in range(0, labels.shape[0], chunk):
            block = np.asarray(labels[s:s + chunk], np.float32)                  # (B, K, 6)
            B, K, _ = block.shape
            used = np.arange(K)[None, :] < self.num[s:s + chunk, None]           # (B, K)
            bad = used & ~_valid_mask(block.reshape(B * K, 6), self.num_classes).reshape(B, K)
            bad_rows += int(bad.sum())
            bad_images += int(bad.any(1).sum())
        return bad_rows, bad_images

    def close(self) -> None:
        self.f.close()


def _valid_mask(rows: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, 6) rows -> (K,) all finite, x1 <= x2, y1 <= y2, class an integer in 1..C."""
    cls = rows[:, 4]
    with np.errstate(invalid="ignore"):
        return np.isfinite(rows).all(1) & (rows[:, 0] <= rows[:, 2]) & (rows[:, 1] <= rows[:, 3]) & \
            (cls == np.round(cls)) & (cls >= 1) & (cls <= num_classes)


def check_rows(f, image_ids: list[int], path: str) -> None:
    """The h5's rows must be the dic's images, in order: by its image_id dataset when it has one,
    else (the original's files) by the row count. Raises DataError naming what is wrong."""
    n = f["dets_labels"].shape[0]
    if f["dets_labels"].ndim != 3 or f["dets_labels"].shape[2] != 6:
        raise DataError(f"{path}: dets_labels has shape {f['dets_labels'].shape}, expected (N, K, 6)")
    if "image_id" not in f:
        if n != len(image_ids):
            raise DataError(f"{path} has {n} rows for the dic's {len(image_ids)} images and no image ids "
                            "(its rows must follow the dic's image order): written for another dic? "
                            "prepro_det.py --reorder H5 --reorder_dic ITS_DIC re-orders it")
        return
    ids = [int(i) for i in f["image_id"][:]]
    if ids[:len(image_ids)] == list(image_ids):          # extra rows after the dic's images are unused
        return
    have = set(ids)
    missing = [i for i in image_ids if i not in have]
    if missing:
        raise DataError(f"{path}: {len(missing)} of the dic's {len(image_ids)} images have no row "
                        f"(e.g. image {missing[0]}): written for another dic?")
    k = next(k for k, (a, b) in enumerate(zip(ids, image_ids)) if a != b)
    raise DataError(f"{path}: row {k} is image {ids[k]} but the dic's image {k} is {image_ids[k]}; "
                    "re-order it with prepro_det.py --reorder")


def check_proposal_h5(path, image_ids: list[int], num_classes: int) -> None:
    """At load: the h5 fits the dic (else DataError), and one warning counts its invalid rows."""
    reader = ProposalReader(path, image_ids, num_classes)
    try:
        bad_rows, bad_images = reader.count_invalid()
    finally:
        reader.close()
    if bad_rows:
        warnings.warn(f"{path}: {bad_rows} invalid proposal rows in {bad_images} images (non-finite, "
                      "x2 < x1 or y2 < y1, or class outside 1..C); they are dropped")
