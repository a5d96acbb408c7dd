"""Loader throughput: cached conv features vs the raw-image path (decode, resize, crop, CNN forward),
images/s measured side by side.

    python benchmarks/bench_loader.py [--images 200]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from common import world_options
from misc.backbone import build_backbone
from misc.dataset import CaptionDataset, DataBundle
from misc.trainer import make_loader
from prepro.prepro_features import build_cache


def throughput(opt, n, backbone=None):
    ds = CaptionDataset(DataBundle.load(opt), "train", train=True, max_images=n)
    loader = make_loader(ds, opt, shuffle=True)
    t = time.perf_counter()
    seen = 0
    with torch.no_grad():
        for batch in loader:
            if backbone is not None:
                backbone(batch["images"])
            seen += batch["images"].shape[0]
    return seen / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    opt = world_options(num_workers=args.workers, finetune_cnn=False)
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(opt, tmp)
        backbone = build_backbone(opt).eval()
        raw = throughput(opt, args.images, backbone)
        cached = throughput(dataclasses.replace(opt, cached_features=str(cache)), args.images)
    print(f"raw images + CNN forward: {raw:8.1f} images/s")
    print(f"cached conv features:     {cached:8.1f} images/s")
    print(f"cached / raw: {cached / raw:.1f}x  (backbone {opt.cnn_backend}, {opt.image_crop_size}px, "
          f"{args.workers} workers)")


if __name__ == "__main__":
    main()
