"""Proposals: torchvision Faster R-CNN, detection JSON import (coco-mini's format and the
original's), and the original's h5 layout.

Row format everywhere: [x1, y1, x2, y2, class, score] in original-image pixels, where `class` is
the 1..C index of the class-name file line (NOT the COCO category id: issue #55 of the original).
Detector labels are mapped to it by category name.

The h5 (the original's layout): dets_labels (N, K, 6), dets_num (N,), nms_num (N,),
row i = the dic's image i; ours adds image_id (N,) so that rows are matched to the dic by id.
Every row read from an h5 or a detection JSON goes through `misc.proposals.validate_proposals`
(finite, x1 <= x2, y1 <= y2, class in 1..C, clipped to the image when its size is known); the
others are dropped and counted (a NaN box reaching torchvision's roi_align can crash the process).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from nbt.misc.io import DataError
from nbt.misc.proposals import usable, validate_proposals
from nbt.misc.vocab import ClassNames

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

        from nbt.misc.weights import download_state_dict, read_state_dict
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
    """A detection JSON -> image id -> (K, 6) rows sorted by score. Two formats, told apart by their
    keys: the original's (`original_detections`) and coco-mini's ({image_id, width?, height?,
    detections: [{bbox_xyxy, category_name, score}]}).

    Detections of classes the run does not know are dropped with a warning naming them; a file of
    which no detection names a class of the run is an error (every caption would be made from no
    regions). Rows that fail validate_proposals (NaN, x1 > x2, outside the image) are dropped and
    counted in one warning."""
    if isinstance(entries, list) and entries and isinstance(entries[0], dict) and "detection" in entries[0]:
        return original_detections(entries, classes, path)
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
                box = [float(v) for v in d["bbox_xyxy"]]
                rows.append([*box, index[name], float(d["score"])] if len(box) == 4 else [np.nan] * 6)
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


def original_detections(entries: list[dict], classes: ClassNames, path: str = "") -> dict[int, np.ndarray]:
    """The original's detection JSON (what its prepro/prepro_det.py read from its Faster R-CNN: a
    list of {image_id, num_boxes, detection: [{location, label, score}]}) -> image id -> (K, 6) rows
    sorted by score. It copied `location` straight into the h5's x1, y1, x2, y2 and `label` into its
    class column, which its loader read as the 1-based class index (the class-name file's line;
    0 is the detector's background), and its loader used the first `num_boxes` rows. Rows that
    fail validate_proposals (a label outside 1..C included) are dropped and counted in one warning."""
    out, bad = {}, []
    try:
        for e in entries:
            dets = e["detection"][: int(e["num_boxes"])]
            rows = np.array([[*map(float, d["location"]), float(d["label"]), float(d["score"])] for d in dets],
                            dtype=np.float64).reshape(-1, 6)
            arr, problems = validate_proposals(rows, np.inf, np.inf, classes.num_classes)
            bad += [f"image {e['image_id']} {p}" for p in problems]
            out[int(e["image_id"])] = arr[np.argsort(-arr[:, 5], kind="stable")]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not the original's detection JSON (image_id, num_boxes, "
                        "detection[*].location [x1, y1, x2, y2] / label / score)") from None
    if bad:
        warnings.warn(f"{path}: dropped {len(bad)} unusable detection rows (first: {bad[0]})")
    return out


def valid_rows(rows: np.ndarray, num_classes: int, size: tuple[float, float] | None = None
               ) -> tuple[np.ndarray, int]:
    """(K, 6) rows -> (the valid ones, clipped to the (width, height) `size` when given; how many
    were dropped), by `validate_proposals`."""
    w, h = size if size is not None else (np.inf, np.inf)
    clean, problems = validate_proposals(rows, w, h, num_classes)
    return clean, len(problems)


def write_h5(path, rows: list[np.ndarray], max_det: int = 100, image_ids: list[int] | None = None) -> None:
    """The original's layout: dets_labels (N, max_det, 6), dets_num, nms_num, plus
    image_id (N,) when given (the dic's image ids, row for row)."""
    import h5py

    from nbt.misc.io import atomic_path
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
        from nbt.misc.io import open_h5
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
            bad = used & ~usable(block.reshape(B * K, 6), self.num_classes).reshape(B, K)
            bad_rows += int(bad.sum())
            bad_images += int(bad.any(1).sum())
        return bad_rows, bad_images

    def close(self) -> None:
        self.f.close()


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
