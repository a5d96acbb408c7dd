"""Cached region features (prepro/prepro_features.py) vs the image path, on the built-in world with
a frozen CNN, measured side by side:

    loader     images/s of the DataLoader alone (raw: JPEG decode + resize + CNN forward; cached:
               reading grid + pooled proposals from the memory map)
    training   images/s of training (misc/trainer.train_one_epoch): raw images through the frozen
               CNN and RoIAlign, vs the decoder only from the cache; image_size == image_crop_size,
               so both see the same batches (tests/test_features.py shows equal metrics)

    python benchmarks/bench_loader.py [--cnn res101] [--images 120] [--workers 0]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch

from common import world_options
from nbt.misc.dataset import CaptionDataset, DataBundle
from nbt.misc.runtime import seed_everything  # noqa: E402
from nbt.misc.trainer import TrainState, make_loader, train_one_epoch  # noqa: E402
from nbt.misc.builders import build_model, build_optimizer  # noqa: E402
from nbt.prepro.prepro_features import build_cache


def loader_rate(opt, n, backbone=None) -> float:
    ds = CaptionDataset(DataBundle.load(opt), "train", train=True, max_images=n)
    t = time.perf_counter()
    seen = 0
    with torch.no_grad():
        for batch in make_loader(ds, opt, shuffle=True):
            if backbone is not None:
                backbone(batch["images"])
            seen += batch["images"].shape[0]
    return seen / (time.perf_counter() - t)


def training_rate(opt, n) -> float:
    """images/s of one training epoch over the first n training images (random CNN weights: the
    loss means nothing here; tests/test_features.py compares the two paths' training)."""
    bundle = DataBundle.load(opt)
    seed_everything(opt.seed)
    model = build_model(opt, bundle, torch.device("cpu"))
    optimizer = build_optimizer(opt, model)
    ds = CaptionDataset(bundle, "train", train=True, max_images=n)
    state = TrainState()
    t = time.perf_counter()
    train_one_epoch(model, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                            make_loader(ds, opt, shuffle=True), opt, torch.device("cpu"), epoch=0, state=state)
    return len(ds) / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cnn", default="res101", help="frozen backbone (random weights: speed only)")
    p.add_argument("--images", type=int, default=120)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a machine others load too)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    opt = world_options(num_workers=args.workers, cnn_backend=args.cnn, pretrained_cnn=False, finetune_cnn=False)
    opt = dataclasses.replace(opt, image_size=opt.image_crop_size, max_epochs=1)
    from nbt.misc.backbone import build_backbone
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        # float32: the random weights' activations overflow float16 (a trained CNN's fit; the
        # prepro refuses to write infinities); speed is what is measured here
        cache = build_cache(opt, tmp, batch_size=16, dtype=np.float32)
        build = time.perf_counter() - t
        cached = dataclasses.replace(opt, cached_features=str(cache))
        size = (cache / "features.npy").stat().st_size / len(DataBundle.load(opt).dic["images"])
        rates = {"loader raw + CNN": loader_rate(opt, args.images, build_backbone(opt).eval()),
                 "loader cached": loader_rate(cached, args.images)}
        raw, cac = training_rate(opt, args.images), training_rate(cached, args.images)
    print(f"world, {args.cnn} frozen at {opt.image_crop_size}px, {args.workers} workers, {args.threads} threads, "
          f"{args.images} images; "
          f"cache built in {build:.1f}s, {size / 1024:.1f} KiB per image (float32)")
    for k, v in rates.items():
        print(f"{k:<26}{v:8.1f} images/s")
    print(f"{'training from images':<26}{raw:8.1f} images/s")
    print(f"{'training from the cache':<26}{cac:8.1f} images/s")
    print(f"cached / raw: loader {rates['loader cached'] / rates['loader raw + CNN']:.1f}x, training {cac / raw:.1f}x")


if __name__ == "__main__":
    main()
