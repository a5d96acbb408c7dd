"""Detections -> the original's proposal h5 (dets_labels N x 100 x 6, dets_num, nms_num).

Rows follow the order of `images` in a dic_*.json (that row index is how the loader finds them).
Class column: the 1..C line index of the class-name file (not the COCO category id).

Run torchvision Faster R-CNN over the images (GPU when present, batched, resumable):
    python prepro/prepro_det.py --input_dic data/coco/dic_coco.json --image_path data/coco/images \
        --class_name_file data/coco/coco_class_name.txt --output_h5 data/coco/coco_detection.h5 \
        [--detector_weights frcnn_v2.pth]      # else torchvision's weight enum (online)
Import a detection JSON (coco-mini's detections_fastestdet.json format) instead:
    python prepro/prepro_det.py ... --from_json detections.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from tqdm import tqdm

from misc.detector import FasterRCNN, detections_from_json, write_h5
from misc.io import DataError, read_json
from misc.transforms import load_image
from misc.vocab import ClassNames


def from_json(dic: dict, classes: ClassNames, path: str) -> list[np.ndarray]:
    table = detections_from_json(read_json(path), classes, path)
    missing = [im["id"] for im in dic["images"] if int(im["id"]) not in table]
    if missing:
        print(f"warning: {len(missing)} images have no detections in {path} (e.g. {missing[0]}); rows left empty")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_dic", required=True)
    p.add_argument("--class_name_file", required=True)
    p.add_argument("--output_h5", required=True)
    p.add_argument("--image_path", default="")
    p.add_argument("--from_json", default="")
    p.add_argument("--detector_weights", default="")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--score_thresh", type=float, default=0.05)
    p.add_argument("--max_det", type=int, default=100)
    p.add_argument("--cuda", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    args = p.parse_args(argv)
    try:
        dic = read_json(args.input_dic)
        classes = ClassNames.read(args.class_name_file)
        rows = from_json(dic, classes, args.from_json) if args.from_json else run_detector(dic, classes, args)
        write_h5(args.output_h5, rows, args.max_det)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = sum(len(r) for r in rows)
    print(f"{args.output_h5}: {len(rows)} images, {n} detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
