"""NBT training step vs a plain top-down decoder of the same size (no pointer, no slot heads),
measured side by side in one run on the same batch.

    python benchmarks/bench_train_step.py [--steps 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from common import timeit, world_options
from misc.dataset import CaptionDataset, DataBundle, collate
from misc.losses import combine
from misc.trainer import batch_counts, build_model, build_optimizer


def step_fn(model, opt, batch, optimizer):
    counts = batch_counts(batch, opt.seq_length)

    def step():
        optimizer.zero_grad(set_to_none=True)
        sums = model(batch)
        combine(sums, (1, 1, 1), *counts)["loss"].backward()
        optimizer.step()
    return step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    opt = world_options(cuda=args.device != "cpu")
    bundle = DataBundle.load(opt)
    times = {}
    for name in ("topdown", "updown_plain"):
        o = dataclasses.replace(opt, att_model=name)
        # the same images and captions; the plain decoder reads the visual words as words
        ds = CaptionDataset(bundle, "train", train=True, visual_slots=name == "topdown")
        batch = collate([ds[(i, 0)] for i in range(opt.batch_size)])
        batch = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        model = build_model(o, bundle, device).train()
        optimizer = build_optimizer(o, model)
        n = sum(p.numel() for p in model.parameters())
        times[name] = timeit(step_fn(model, o, batch, optimizer), repeat=args.steps) * 1000
        print(f"{name:<14} {n:>9,} parameters  {times[name]:8.1f} ms / step (batch {opt.batch_size} x "
              f"{opt.seq_per_img} captions)")
    print(f"NBT / plain top-down step time: {times['topdown'] / times['updown_plain']:.2f}x")


if __name__ == "__main__":
    main()
