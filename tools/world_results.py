"""Reproduce the README's results table on the built-in world: NBT, Show-and-Tell and AoANet, each
after XE and after SCST, on the normal, robust and NOC splits.

    python tools/world_results.py --xe_epochs 8 --scst_epochs 2 --seed 123

Writes eval_results/world_results.json and eval_results/world_results.md (the table).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import _checkout  # noqa: E402,F401  (`nbt` = this checkout)

from nbt.misc.config import build_options  # noqa: E402
from nbt.misc.io import atomic_write_json, atomic_write_text  # noqa: E402

SPLITS = {"normal": "cfgs/world.yml", "robust": "cfgs/robust_world.yml", "noc": "cfgs/noc_world.yml"}
MODELS = {"topdown": "NBT", "showtell": "Show-and-Tell", "aoanet": "AoANet"}


def run_one(split: str, model: str, args) -> list[dict]:
    from nbt.prepro.prepare_world import ensure_world
    from nbt.misc.session import train
    base = build_options(["--path_opt", str(ROOT / SPLITS[split]), "--att_model", model,
                          "--seed", str(args.seed), "--val_every_epoch", "0", "--eval_split", "",
                          "--checkpoint_path", str(ROOT / "save" / "results")])
    ensure_world(base)
    rid = f"{split}_{model}"
    rows = []
    t0 = time.time()
    xe = dataclasses.replace(base, id=rid, max_epochs=args.xe_epochs)
    train(xe)
    rows += evaluate(xe, rid, split, model, "XE", time.time() - t0)
    t0 = time.time()
    sc = dataclasses.replace(base, id=rid + "_scst", start_from=str(ROOT / "save" / "results" / rid / "model.pth"),
                             max_epochs=args.xe_epochs + args.scst_epochs, self_critical_after=args.xe_epochs)
    train(sc)
    rows += evaluate(sc, rid + "_scst", split, model, "XE+SCST", time.time() - t0)
    return rows


def evaluate(opt, rid, split, model, stage, seconds) -> list[dict]:
    from nbt.misc.session import inference
    run_dir = str(ROOT / "save" / "results" / rid)
    variants = [("greedy", dict(beam_size=1, cbs=False))]
    if split == "noc" and model == "topdown":
        variants.append(("CBS novel", dict(beam_size=3, cbs=True, cbs_mode="novel", cbs_tag_size=2)))
    out = []
    for name, kw in variants:
        o = dataclasses.replace(opt, start_from=run_dir, load_best_score=False, id=f"{rid}_{name.replace(' ', '_')}", **kw)
        r = inference(o, "test")
        ov = r["overall"]
        out.append({"split": split, "model": MODELS[model], "stage": stage, "decoding": name,
                    "Bleu_4": ov["Bleu_4"], "METEOR": ov.get("METEOR"), "CIDEr": ov["CIDEr"],
                    "noc_f1": (r.get("noc") or {}).get("average", {}).get("f1"),
                    "grounding": (r.get("grounding") or {}).get("grounding_accuracy"),
                    "fine_grained": (r.get("grounding") or {}).get("fine_grained_accuracy"),
                    "plural": (r.get("grounding") or {}).get("plural_accuracy"),
                    "train_seconds": round(seconds)})
    return out


def table(rows: list[dict]) -> str:
    def f(v, scale=100.0):
        return "–" if v is None else f"{v * scale:.1f}"
    lines = ["| split | model | training | decoding | BLEU-4 | METEOR | CIDEr | NOC F1 | grounding acc. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['model']} | {r['stage']} | {r['decoding']} | {f(r['Bleu_4'])} | "
                     f"{f(r['METEOR'])} | {f(r['CIDEr'])} | {f(r['noc_f1'])} | {f(r['grounding'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xe_epochs", type=int, default=8)
    p.add_argument("--scst_epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--splits", default="normal,robust,noc")
    p.add_argument("--models", default="topdown,showtell,aoanet")
    args = p.parse_args(argv)
    rows = []
    out = ROOT / "eval_results"
    for split in args.splits.split(","):
        for model in args.models.split(","):
            rows += run_one(split, model, args)
            atomic_write_json(out / "world_results.json", {"args": vars(args), "rows": rows}, indent=1)
            atomic_write_text(out / "world_results.md", table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
