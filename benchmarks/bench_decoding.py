"""Batched beam search and CBS vs a per-image loop over the same model (as the original decoded).

    python benchmarks/bench_decoding.py [--images 100] [--beam 3]
Prints the time of each, the speed-up ratio and whether the captions are identical.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from common import load_trained_or_random, timeit, world_options
from nbt.misc.dataset import CaptionDataset, DataBundle, collate
from nbt.misc.decoding import beam_search, select_constraints


def per_image(decoder, f, B, **kw):
    out = []
    for i in range(B):
        fi = f.rows(torch.tensor([i], device=f.device))
        c = kw.get("constraints")
        out += beam_search(decoder, fi, **{**kw, "constraints": None if c is None else c[i:i + 1]})
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--beam", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)
    opt = world_options(cuda=args.device != "cpu")
    bundle = DataBundle.load(opt)
    ds = CaptionDataset(bundle, "test", train=False, max_images=args.images)
    batch = collate([ds[(i, 0)] for i in range(len(ds))])
    model, what = load_trained_or_random(opt, bundle, device)
    batch_dev = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}
    with torch.no_grad():
        f = model.encode(batch_dev)
    B = f.batch
    cons = select_constraints(batch["proposals"], batch["prop_mask"], n_constraints=2, mode="all", score_thresh=0.0).to(device)
    print(f"model: {what}; {B} images; device {device}; torch threads {torch.get_num_threads()}")
    rows = []
    for name, kw, repeat in (("beam search", dict(beam_size=args.beam, max_len=opt.seq_length), 3),
                             ("CBS (2 constraints)", dict(beam_size=args.beam, max_len=opt.seq_length,
                                                          constraints=cons), 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            batched = beam_search(model.decoder, f, **kw)
            looped = per_image(model.decoder, f, B, **kw)
            t_batched = timeit(lambda: beam_search(model.decoder, f, **kw), repeat=repeat)
            t_loop = timeit(lambda: per_image(model.decoder, f, B, **kw), repeat=2, warmup=0)
        same = all(a.tokens == b.tokens and a.plural == b.plural and a.fine == b.fine
                   for a, b in zip(batched, looped))
        rows.append((name, t_loop, t_batched, t_loop / t_batched, same))
    print(f"{'decoder':<22}{'per-image s':>12}{'batched s':>11}{'speed-up':>10}  identical")
    for name, a, b, r, same in rows:
        print(f"{name:<22}{a:>12.3f}{b:>11.3f}{r:>9.1f}x  {same}")


if __name__ == "__main__":
    main()
