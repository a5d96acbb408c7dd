"""GPU figures at COCO dimensions in a few minutes: training-step throughput and peak memory,
evaluation throughput (beam 3, CBS) and the detector pass. Random weights, no downloads, no data
files: the project's modules (misc.captioner.build_captioner, misc.decoding.beam_search /
select_constraints) on the synthetic COCO-sized batches of benchmarks/coco_dims.py.

    python benchmarks/gpu_check.py --out gpu_figures.json          # on a CUDA machine (~5 min on an H100)
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke.json   # tiny dims on the CPU, 1 step each

Measured, each configuration on its own (OOM is reported as OOM and the run goes on):
  train     one optimiser step (forward, backward, gradient clipping, Adam) at batch 20 / 50 / 100
            images x 5 captions, fp32 and bf16 autocast, from raw 512 px images (frozen ResNet-101
            forward + decoder) and from cached conv maps (decoder only); images/s and peak memory
            (torch.cuda.max_memory_allocated: weights, Adam state, activations). The batch is
            already on the GPU: data loading is not included.
  eval      encode (bf16 autocast, as misc.inference.decode_batch) + beam search (beam 3), and
            + CBS (2 constraints, beam 3), from raw images at batch 20 and 100. Random weights
            rarely say EOS, so captions run to the maximum length (16): an upper bound on the time.
  detector  torchvision fasterrcnn_resnet50_fpn_v2 with prepro_det's settings (score threshold
            0.05, 100 detections per image) at batch 8 on 512-640 px images (resized to 800 px
            inside torchvision, as in the real pass), images already on the GPU (no JPEG decode).
            Random weights already give each image its 100 detections above the threshold, so
            the final per-class NMS is paid as with trained weights.
From images/s, `epoch_h` is the time of one pass over COCO's Karpathy train split (113,287 images);
for the detector, over all 123,287 images.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coco_dims import coco_batch, coco_model, coco_options  # noqa: E402
from nbt.misc.decoding import beam_search, select_constraints  # noqa: E402
from nbt.misc.runtime import autocast  # noqa: E402
from nbt.misc.io import atomic_write_json  # noqa: E402
from nbt.misc.losses import combine, loss_weights  # noqa: E402
from nbt.misc.trainer import batch_counts  # noqa: E402
from nbt.misc.builders import build_optimizer  # noqa: E402

TRAIN_IMAGES, ALL_IMAGES = 113_287, 123_287


class Timer:
    """Wall time of `timed` calls after `warmup` calls, synchronising the device around them."""

    def __init__(self, device: torch.device, warmup: int, timed: int):
        self.device, self.warmup, self.timed = device, warmup, timed

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        self.sync()
        t = time.perf_counter()
        for _ in range(self.timed):
            fn()
        self.sync()
        return (time.perf_counter() - t) / self.timed


def run_config(row: dict, device: torch.device, fn, epoch_images: int = 0) -> dict:
    """Run fn() -> seconds per batch; fill images/s, peak memory and the hours of a pass over
    `epoch_images` images, or status OOM."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = fn()
        row.update(status="ok", images_per_s=round(row["batch"] / seconds, 2), seconds_per_batch=round(seconds, 4))
        if epoch_images:
            row["epoch_h"] = round(epoch_images * seconds / row["batch"] / 3600, 2)
        if device.type == "cuda":
            row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except torch.cuda.OutOfMemoryError:
        row.update(status="OOM")
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print(format_row(row), flush=True)
    return row


def train_rows(args, device, timer) -> list[dict]:
    rows = []
    for raw in (True, False):
        opt = coco_options(tiny=args.smoke, cached_features="" if raw else "synthetic")
        model = coco_model(opt, tiny=args.smoke).to(device).train()
        for amp in ("none", "bf16"):
            o = coco_options(tiny=args.smoke, cached_features=opt.cached_features, amp=amp)
            for B in args.batches:
                row = {"section": "train", "amp": "fp32" if amp == "none" else amp,
                       "input": "raw images" if raw else "cached features", "batch": B}
                rows.append(run_config(row, device, lambda: timer(train_step(model, o, B, raw, device, args.smoke)),
                                       TRAIN_IMAGES))
        del model
    return rows


def train_step(model, opt, B: int, raw: bool, device, tiny: bool):
    """One training step as misc.trainer.train_one_epoch takes it (XE, no GradScaler: fp32 / bf16)."""
    batch = {k: (v.to(device) if torch.is_tensor(v) else v)
             for k, v in coco_batch(B, tiny=tiny, raw_images=raw).items()}
    optimizer = build_optimizer(opt, model)
    counts = batch_counts(batch, opt.seq_length)
    weights = loss_weights(opt)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, opt.amp):
            sums = model(batch)
        combine(sums, weights, *counts)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
        optimizer.step()
    return step


def eval_rows(args, device, timer) -> list[dict]:
    opt = coco_options(tiny=args.smoke, cached_features="", amp="bf16")
    model = coco_model(opt, tiny=args.smoke).to(device).eval()
    rows = []
    for B in args.eval_batches:
        batch = coco_batch(B, tiny=args.smoke, raw_images=True)
        for name, cbs in (("beam 3", False), ("CBS 2 constraints, beam 3", True)):
            row = {"section": "eval", "amp": "bf16 encode", "input": f"raw images, {name}", "batch": B}
            rows.append(run_config(row, device, lambda: timer(eval_step(model, opt, batch, cbs, device))))
    del model
    return rows


def eval_step(model, opt, batch, cbs: bool, device):
    """misc.inference.decode_batch without the slot filling into strings (CPU text work)."""
    batch_dev = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}

    @torch.no_grad()
    def step():
        with autocast(device, opt.amp):
            f = model.encode(batch_dev)
        f = f.float()
        constraints = select_constraints(batch["proposals"], batch["prop_mask"], n_constraints=2, mode="all",
                                         score_thresh=0.0) if cbs else None
        beam_search(model.decoder, f, beam_size=3, max_len=opt.seq_length, constraints=constraints)
    return step


def detector_row(args, device, timer) -> dict:
    from torchvision.models import detection
    small = dict(min_size=64, max_size=80, rpn_post_nms_top_n_test=50) if args.smoke else {}   # a quick CPU check
    torch.manual_seed(0)
    net = detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91,
                                               box_score_thresh=0.05, box_detections_per_img=100, **small)
    net = net.eval().to(device)
    g = torch.Generator().manual_seed(0)
    lo, hi = (64, 80) if args.smoke else (512, 640)
    B = 1 if args.smoke else 8
    images = [torch.rand(3, int(torch.randint(lo, hi + 1, (1,), generator=g)),
                         int(torch.randint(lo, hi + 1, (1,), generator=g)), generator=g).to(device) for _ in range(B)]

    @torch.no_grad()
    def step():
        net(images)
    row = {"section": "detector", "amp": "fp32", "input": f"fasterrcnn_resnet50_fpn_v2, {lo}-{hi} px", "batch": B}
    return run_config(row, device, lambda: timer(step), ALL_IMAGES)


HEADER = f"{'section':<9}{'amp':<12}{'input':<40}{'batch':>6}{'images/s':>10}{'peak GiB':>10}{'epoch h':>9}"


def format_row(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r['section']:<9}{r['amp']:<12}{r['input']:<40}{r['batch']:>6}{r.get('status', ''):>10}"
    mem = r.get("peak_mem_gib")
    return (f"{r['section']:<9}{r['amp']:<12}{r['input']:<40}{r['batch']:>6}{r['images_per_s']:>10.1f}"
            f"{'' if mem is None else f'{mem:.2f}':>10}{r.get('epoch_h', ''):>9}")


def main(argv=None):
    p = argparse.ArgumentParser(description="GPU figures at COCO dimensions (train, eval, detector).")
    p.add_argument("--out", required=True, help="JSON file to write the figures to")
    p.add_argument("--smoke", action="store_true", help="tiny dimensions on the CPU, one step each (a check of the script)")
    p.add_argument("--device", default="", help="default: cuda (cpu with --smoke)")
    p.add_argument("--sections", nargs="+", default=["train", "eval", "detector"], choices=["train", "eval", "detector"])
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (run with --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    args.batches = [2] if args.smoke else [20, 50, 100]
    args.eval_batches = [2] if args.smoke else [20, 100]
    train_timer = Timer(device, 0, 1) if args.smoke else Timer(device, 3, 5)
    eval_timer = Timer(device, 0, 1) if args.smoke else Timer(device, 1, 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "torch": torch.__version__, "smoke": args.smoke,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    print(f"{name}, torch {torch.__version__}{' (smoke: tiny dims)' if args.smoke else ''}")
    print(HEADER, flush=True)
    start = time.time()
    rows = []

    def save(new_rows):   # after every section, so a run cut short keeps what it measured
        rows.extend(new_rows)
        meta["seconds"] = round(time.time() - start, 1)
        atomic_write_json(args.out, {"meta": meta, "rows": rows}, indent=1)
    if "train" in args.sections:
        save(train_rows(args, device, train_timer))
    if "eval" in args.sections:
        save(eval_rows(args, device, eval_timer))
    if "detector" in args.sections:
        save([detector_row(args, device, train_timer)])
    print(f"\n{HEADER}\n" + "\n".join(format_row(r) for r in rows))
    print(f"total {meta['seconds']} s; figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
