"""Caption prepro (`prepro/prepro_dic_coco.py`) at COCO size: 123,287 images x 5 = 616,435 captions,
synthesised from coco-mini's 795 real captions, timed end to end (read, tokenise, vocabulary,
visual-word matching, plural table, dic / cap / CIDEr-D df written).

    python benchmarks/bench_prepro.py [--images 123287] [--baseline ../main] [--keep DIR]

Resampling alone would give coco-mini's ~1,000-word vocabulary and few distinct n-grams (a cheap
df table). So each synthetic caption splices the head of one real caption onto the tail of
another, and about 3 % of its tokens are replaced by Zipf-distributed made-up words (30,000 of
them), giving a vocabulary and an n-gram count of COCO's order (COCO: ~25k words). The captions
are written as two COCO `captions_*2017.json` files (113,287 train images, 10,000 val images),
the way a COCO 2017 user runs prepro.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MINI = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
            ROOT.parent / "shared" / "data") / "coco-mini" / "annotations"


def synthesise(out: Path, n_images: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    real = [a["caption"].strip().rstrip(".").split()
            for f in ("captions_train2017.json", "captions_val2017.json")
            for a in json.loads((MINI / f).read_text())["annotations"]]
    made_up = [f"w{k}x" for k in range(30_000)]
    weights = [1.0 / (k + 1) for k in range(len(made_up))]
    n_val = min(10_000, n_images // 10)
    total = 0
    for name, ids in (("captions_train2017.json", range(1, n_images - n_val + 1)),
                      ("captions_val2017.json", range(n_images - n_val + 1, n_images + 1))):
        images, anns = [], []
        rare = iter(rng.choices(made_up, weights, k=len(ids) * 5 * 12))
        for i in ids:
            images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
            for _ in range(5):
                a, b = rng.choice(real), rng.choice(real)
                toks = a[: rng.randint(1, len(a))] + b[rng.randint(0, len(b) - 1):]
                toks = [next(rare) if rng.random() < 0.03 else t for t in toks]
                anns.append({"image_id": i, "id": len(anns) + total, "caption": " ".join(toks) + "."})
        (out / name).write_text(json.dumps({"images": images, "annotations": anns}))
        total += len(anns)
    return total


def run_prepro(root: Path, out: Path, tag: str) -> tuple[float, float]:
    """Prepro of `root`'s checkout on the synthetic files -> (wall s, CPU s of the child)."""
    cmd = [sys.executable, str(root / "prepro" / "prepro_dic_coco.py"), "--captions_json",
           str(out / "captions_train2017.json"), str(out / "captions_val2017.json"),
           "--class_name_file", str(ROOT / "data" / "coco" / "coco_class_name.txt"),
           "--output_dic", str(out / f"dic_{tag}.json"), "--output_cap", str(out / f"cap_{tag}.json"),
           "--output_df", str(out / f"df_{tag}.json")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=123_287)
    p.add_argument("--baseline", default="", help="another checkout (e.g. the main branch) to time side by side")
    p.add_argument("--keep", default="", help="keep the synthetic input and outputs in this folder")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        n = synthesise(out, args.images)
        print(f"{n:,} captions, {args.images:,} images; load average {os.getloadavg()[0]:.1f}")
        runs = [("this checkout", ROOT)] + ([("baseline", Path(args.baseline))] if args.baseline else [])
        for tag, root in runs:
            wall, cpu = run_prepro(root, out, tag.split()[0])
            dic = json.loads((out / f"dic_{tag.split()[0]}.json").read_text())
            df = json.loads((out / f"df_{tag.split()[0]}.json").read_text())
            print(f"{tag:14s} {wall:6.1f} s wall, {cpu:6.1f} s CPU; vocab {len(dic['ix_to_word']):,}, "
                  f"df n-grams {len(df['df']):,}")
        if args.baseline:
            same = [json.loads((out / f"{k}_this.json").read_text()) == json.loads((out / f"{k}_baseline.json").read_text())
                    for k in ("df", "cap")]
            print(f"df table equal: {same[0]}, cap file equal: {same[1]}")


if __name__ == "__main__":
    main()
