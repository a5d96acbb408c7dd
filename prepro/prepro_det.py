"""Detections -> the original's proposal h5 (dets_labels N x 100 x 6, dets_num, nms_num) + image_id.

Rows follow the order of `images` in a dic_*.json (that row index is how the loader finds them);
the `image_id` dataset (N,) names each row's image, and the loader checks it against the dic.
Class column: the 1..C line index of the class-name file (not the COCO category id).

Run torchvision Faster R-CNN over the images (GPU when present, batched, resumable):
    python prepro/prepro_det.py --input_dic data/coco/dic_coco.json --image_path data/coco/images \
        --class_name_file data/coco/coco_class_name.txt --output_h5 data/coco/coco_detection.h5 \
        [--detector_weights frcnn_v2.pth]      # else torchvision's weight enum (online)
Import detection JSONs instead: coco-mini's detections_fastestdet.json format, or the original's
(per image {image_id, num_boxes, detection: [{location: [x1, y1, x2, y2], label: class line 1..C,
score}]}, e.g. its coco_detection_noc_train.json and coco_detection_noc_val.json):
    python prepro/prepro_det.py ... --from_json detections.json [more.json ...]
Re-order an existing h5 into the dic's image order (by its image_id; for an h5 of the original's,
which has none, name the dic its rows follow with --reorder_dic):
    python prepro/prepro_det.py --input_dic data/coco/dic_coco.json --class_name_file ... \
        --reorder old.h5 [--reorder_dic old_dic.json] --output_h5 data/coco/coco_detection.h5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

import numpy as np
from tqdm import tqdm

from nbt.misc.detector import FasterRCNN, detections_from_json, valid_rows, write_h5
from nbt.misc.io import DataError, open_h5, read_json
from nbt.misc.transforms import load_image
from nbt.misc.vocab import ClassNames


def from_json(dic: dict, classes: ClassNames, paths: list[str]) -> list[np.ndarray]:
    """The rows of one or more detection JSONs (the original split its COCO ones into train and
    val files), in the dic's image order."""
    table: dict[int, np.ndarray] = {}
    for path in paths:
        table.update(detections_from_json(read_json(path), classes, path))
    where = " and ".join(paths)
    missing = [im["id"] for im in dic["images"] if int(im["id"]) not in table]
    if missing:
        print(f"warning: {len(missing)} images have no detections in {where} (e.g. {missing[0]}); rows left empty")
    return [table.get(int(im["id"]), np.zeros((0, 6), np.float32)) for im in dic["images"]]


def run_detector(dic: dict, classes: ClassNames, args) -> list[np.ndarray]:
    import torch
    device = "cuda" if torch.cuda.is_available() and args.cuda else "cpu"
    det = FasterRCNN(classes, weights=args.detector_weights, device=device, score_thresh=args.score_thresh)
    partial = Path(str(args.output_h5) + ".partial.npz")
    done: dict[int, np.ndarray] = {}
    if partial.is_file():                       # resume an interrupted run
        with np.load(partial) as z:
            done = {int(k): z[k] for k in z.files}
        print(f"resuming: {len(done)} images already detected")
    todo = [i for i in range(len(dic["images"])) if i not in done]
    for s in tqdm(range(0, len(todo), args.batch_size), desc="detect"):
        idx = todo[s:s + args.batch_size]
        images = [load_image(Path(args.image_path) / dic["images"][i]["file_path"]) for i in idx]
        ok = [(i, im) for i, im in zip(idx, images) if im is not None]
        for i, im in zip(idx, images):
            if im is None:
                done[i] = np.zeros((0, 6), np.float32)
        if ok:
            for (i, _), rows in zip(ok, det([im for _, im in ok])):
                done[i] = rows
        if (s // args.batch_size) % 50 == 49:
            np.savez(partial.with_suffix(".tmp.npz"), **{str(k): v for k, v in done.items()})
            partial.with_suffix(".tmp.npz").replace(partial)
    rows = [done[i] for i in range(len(dic["images"]))]
    if partial.exists():
        partial.unlink()
    return rows


def reorder(dic: dict, classes: ClassNames, path: str, rows_dic: str = "") -> list[np.ndarray]:
    """The rows of an existing h5, in the order of `dic`'s images: found by the h5's image_id, or
    (an h5 without ids) by the image order of `rows_dic`, the dic it was written for."""
    with open_h5(path, ("dets_labels",)) as f:
        if "image_id" in f:
            ids = [int(i) for i in f["image_id"][:]]
        elif rows_dic:
            ids = [int(im["id"]) for im in read_json(rows_dic)["images"]]
            if len(ids) != f["dets_labels"].shape[0]:
                raise DataError(f"{path} has {f['dets_labels'].shape[0]} rows but {rows_dic} has {len(ids)} images")
        else:
            raise DataError(f"{path} has no image ids: give --reorder_dic, the dic its rows follow")
        where = {i: k for k, i in enumerate(ids)}
        missing = [im["id"] for im in dic["images"] if int(im["id"]) not in where]
        if missing:
            raise DataError(f"{path}: {len(missing)} of the dic's {len(dic['images'])} images have no row "
                            f"(e.g. image {missing[0]})")
        num = f["nms_num"][:] if "nms_num" in f else f["dets_num"][:]
        labels = f["dets_labels"]
        rows, dropped = [], 0
        for im in tqdm(dic["images"], desc="reorder", unit=" images", mininterval=1):
            k = where[int(im["id"])]
            r, bad = valid_rows(np.asarray(labels[k, :int(num[k])], np.float32), classes.num_classes)
            rows.append(r)
            dropped += bad
    if dropped:
        print(f"warning: {path}: dropped {dropped} invalid rows (non-finite, x2 < x1 or y2 < y1, class outside 1..C)")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dic", required=True, help="dic_*.json: its images, in order, are the h5's rows")
    p.add_argument("--class_name_file", required=True)
    p.add_argument("--output_h5", required=True)
    p.add_argument("--image_path", default="", help="image root (running the detector)")
    p.add_argument("--from_json", nargs="+", default=[],
                   help="import detection JSONs instead of running the detector: coco-mini's format, or the "
                        "original's (image_id, num_boxes, detection[*].location x1 y1 x2 y2 / label 1..C / score)")
    p.add_argument("--reorder", default="", help="re-order this existing h5 into the dic's image order")
    p.add_argument("--reorder_dic", default="", help="with --reorder, for an h5 without image ids: the dic "
                                                     "whose image order its rows follow")
    p.add_argument("--detector_weights", default="", help="torchvision Faster R-CNN weights file")
    p.add_argument("--batch_size", type=int, default=8, help="images per detector batch")
    p.add_argument("--score_thresh", type=float, default=0.05, help="detector score threshold")
    p.add_argument("--max_det", type=int, default=100, help="rows kept per image (by score)")
    p.add_argument("--cuda", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                   help="run the detector on the GPU when there is one")
    args = p.parse_args(argv)
    try:
        if args.from_json and args.reorder:
            raise DataError("give at most one of --from_json and --reorder")
        dic = read_json(args.input_dic)
        classes = ClassNames.read(args.class_name_file)
        if args.reorder:
            rows = reorder(dic, classes, args.reorder, args.reorder_dic)
        elif args.from_json:
            rows = from_json(dic, classes, args.from_json)
        else:
            rows = run_detector(dic, classes, args)
        write_h5(args.output_h5, rows, args.max_det, image_ids=[int(im["id"]) for im in dic["images"]])
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = sum(len(r) for r in rows)
    print(f"{args.output_h5}: {len(rows)} images, {n} detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
