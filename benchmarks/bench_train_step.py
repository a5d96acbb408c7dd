"""NBT training step vs a plain top-down decoder of the same size (att_model updown_plain: no
pointer, no sentinel, no slot heads, no region grouping), side by side in one run on the same batch.

Two sizes:
  world  the built-in world's config (cfgs/world.yml; tiny CNN trained, 20 images x 5 captions)
  coco   COCO dimensions (benchmarks/coco_dims.py: vocabulary 9,500, 100 proposals, rnn 1,024,
         ResNet-101 conv maps cached so the decoder dominates; 10 images x 5 captions)
The two models' steps are interleaved (plain, NBT, plain, NBT, ...) and each keeps its best wall
time, so a busy machine slows both alike.

    python benchmarks/bench_train_step.py [--dims world coco] [--steps 5] [--threads 2] [--device cpu]
    python benchmarks/bench_train_step.py --before /path/to/older/checkout   # before / after ratios
    python benchmarks/bench_train_step.py --threads 1 --clock cpu              # on a busy machine

--before DIR runs the same measurement on the model code (misc/) of DIR and of this checkout in
alternating subprocesses, --rounds times each, and reports both ratios. On a machine shared with
other jobs, wall times with 2 threads swing by tens of percent (a parallel region waits for its
slowest thread); `--threads 1 --clock cpu` counts this process's CPU time instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import ROOT, world_options

MODELS = ("updown_plain", "topdown")


def world_setup(name: str, device):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    try:
        from nbt.misc.builders import build_model
    except ImportError:                                     # a checkout from before misc/builders.py
        from nbt.misc.trainer import build_model
    opt = dataclasses.replace(world_options(cuda=device.type != "cpu"), att_model=name)
    bundle = DataBundle.load(opt)
    # the same images and captions; the plain decoder reads the visual words as words
    ds = CaptionDataset(bundle, "train", train=True, visual_slots=name == "topdown")
    batch = collate([ds[(i, 0)] for i in range(opt.batch_size)])
    return opt, build_model(opt, bundle, device), batch, f"{opt.batch_size} images x {opt.seq_per_img} captions"


def coco_setup(name: str, device, images: int = 10):
    from coco_dims import coco_batch, coco_model, coco_options
    opt = coco_options(att_model=name, batch_size=images)
    batch = coco_batch(images, visual=name == "topdown")
    return opt, coco_model(opt).to(device), batch, f"{images} images x 5 captions, cached features"


def step_fn(opt, model, batch, device):
    from nbt.misc.losses import combine
    from nbt.misc.trainer import batch_counts
    try:
        from nbt.misc.builders import build_optimizer
    except ImportError:                                     # a checkout from before misc/builders.py
        from nbt.misc.trainer import build_optimizer
    batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    model.train()
    optimizer = build_optimizer(opt, model)
    counts = batch_counts(batch, opt.seq_length)
    weights = (opt.lm_loss_weight, opt.bn_loss_weight, opt.fg_loss_weight, opt.group_loss_weight)   # works on older checkouts too

    def step():
        optimizer.zero_grad(set_to_none=True)
        combine(model(batch), weights, *counts)["loss"].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def measure(dims: str, steps: int, device, clock=time.perf_counter) -> dict:
    """Best time (ms) of each model over `steps` interleaved steps, after one warm-up each."""
    setup = world_setup if dims == "world" else coco_setup
    fns, info = {}, {}
    for name in MODELS:
        opt, model, batch, what = setup(name, device)
        fns[name] = step_fn(opt, model, batch, device)
        info[name] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        fns[name]()                                                       # warm-up
    times = {name: [] for name in MODELS}
    for _ in range(steps):
        for name in MODELS:
            t = clock()
            fns[name]()
            times[name].append(clock() - t)
    ms = {name: min(times[name]) * 1000 for name in MODELS}
    paired = sorted(b / a for a, b in zip(*times.values()))               # NBT / plain, step by step
    return {"dims": dims, "batch": what, "ms": ms, "trainable": info, "ratio": ms["topdown"] / ms["updown_plain"],
            "paired_median": paired[len(paired) // 2]}


def print_result(r: dict, label: str = "") -> None:
    ms, n = r["ms"], r["trainable"]
    print(f"{label}{r['dims']:<6} ({r['batch']}): plain top-down {ms['updown_plain']:8.1f} ms "
          f"({n['updown_plain']:,} trainable), NBT {ms['topdown']:8.1f} ms ({n['topdown']:,}) "
          f"-> NBT / plain {r['ratio']:.2f}x (median of step pairs {r['paired_median']:.2f}x)", flush=True)


def before_after(args) -> None:
    """Alternate subprocesses on the older checkout's misc/ and on this one's; best of each."""
    runner = ("import os, sys, runpy; script = sys.argv[2]; sys.path.insert(0, os.path.dirname(script)); "
              "import other_checkout; other_checkout.bind(sys.argv[1]); sys.argv = [script] + sys.argv[3:]; "
              "runpy.run_path(script, run_name='__main__')")
    sides = {"before": str(Path(args.before).resolve()), "after": str(ROOT)}
    results: dict = {side: {} for side in sides}
    for _ in range(args.rounds):
        for side, src in sides.items():
            cmd = [sys.executable, "-c", runner, src, __file__, "--json", "--steps", str(args.steps),
                   "--threads", str(args.threads), "--device", args.device, "--clock", args.clock,
                   "--dims", *args.dims]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            for r in json.loads(out.strip().splitlines()[-1]):
                results[side].setdefault(r["dims"], []).append(r)
    for side in sides:
        for runs in results[side].values():
            ms = {k: min(r["ms"][k] for r in runs) for k in MODELS}
            pairs = sorted(r["paired_median"] for r in runs)
            print_result({**runs[0], "ms": ms, "ratio": ms["topdown"] / ms["updown_plain"],
                          "paired_median": pairs[len(pairs) // 2]}, f"{side:<7}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dims", nargs="+", default=["world", "coco"], choices=["world", "coco"])
    p.add_argument("--steps", type=int, default=5, help="timed steps of each model (interleaved)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: this process's CPU time (with --threads 1, insensitive to other processes on the machine)")
    p.add_argument("--before", default="", help="an older checkout: before / after ratios in one run")
    p.add_argument("--rounds", type=int, default=3, help="with --before: subprocess runs of each side")
    p.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = p.parse_args()
    if args.before:
        return before_after(args)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and device.type != "cpu":
        p.error("--clock cpu measures CPU work: use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    results = [measure(d, args.steps, device, clock) for d in args.dims]
    if args.json:
        print(json.dumps(results))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.clock} clock")
    for r in results:
        print_result(r)


if __name__ == "__main__":
    main()
