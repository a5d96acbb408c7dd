"""Full-budget run on the independent grounded dataset (tests/independent_data.py); not in CI.

Generates the dataset (1,800 images by default, like the built-in world), writes the world's NOC
config (cfgs/noc_world.yml: same epochs, batch size, model size, tiny CNN from scratch) with this
dataset's paths, then runs the project's commands as a user would:

    prepro/prepro_dic_coco.py --captions_json ... --split noc --split_file split_noc_indep.json
    prepro/prepro_det.py ... --from_json detections_indep.json
    main.py --path_opt noc_indep.yml                       (train, then greedy on test)
    main.py --path_opt noc_indep.yml --inference_only True --start_from save/noc_indep \\
        --cbs True --cbs_mode novel --beam_size 3 --id noc_indep_cbs

and reports, for greedy and CBS, the project's own numbers next to the same quantities computed
from the generator's truth (independent_data.independent_scores): NOC F1 per held-out class,
plural / number-word / fine-grained accuracy, grounding accuracy, CIDEr. Default settings only.
The issue's targets: NOC F1 with CBS >= 0.85, plural accuracy >= 0.90.

    nice -n 5 python benchmarks/independent_e2e.py --out data/indep [--n_images 1800 --seed 11 --threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from independent_data import (CLASS_FILE_ORDER, HELD_OUT, independent_scores, pipeline,  # noqa: E402
                              prepro_paths, write_config, write_dataset)

RUN = "noc_indep"


def run_steps(data: Path, extra: list[str], threads: int) -> dict[str, dict]:
    """Run the pipeline; output streams to data/logs/<step>.log; stop at the first failing step."""
    (data / "logs").mkdir(exist_ok=True)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    timings = {}
    for step, cmd in pipeline(data, ROOT, sys.executable, RUN, extra):
        log = data / "logs" / f"{step}.log"
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n\n")
            f.flush()
            r = subprocess.run(cmd, cwd=data, stdout=f, stderr=subprocess.STDOUT, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        timings[step] = {"wall_s": round(time.time() - t0, 1), "rc": r.returncode,
                         "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 1)}
        t = timings[step]
        print(f"{step}: exit {r.returncode}, {t['wall_s']} s wall, {t['cpu_s']} s CPU", flush=True)
        if r.returncode != 0:
            print(f"{log}:\n{log.read_text()[-3000:]}", file=sys.stderr)
            break
    return timings


def top_held_out_pointed(data: Path, results: dict, truth: dict) -> tuple[int, int]:
    """Novel test images whose caption points at the best-scoring held-out detection (the
    constraint CBS novel mode should impose), of those that have one."""
    held_lines = [CLASS_FILE_ORDER.index(n) + 1 for n in HELD_OUT]
    dic = json.loads(prepro_paths(data)["dic"].read_text())
    row_of = {im["id"]: k for k, im in enumerate(dic["images"])}
    with h5py.File(prepro_paths(data)["h5"]) as f:
        labels, num = f["dets_labels"][:], f["dets_num"][:]
    named = total = 0
    for p in results["imgToEval"]:
        row = row_of[p["image_id"]]
        held = np.flatnonzero(np.isin(labels[row, :num[row], 4], held_lines))
        if truth[p["image_id"]]["role"] == "test" and len(held):
            total += 1
            named += any(g["region"] == int(held[0]) for g in p["grounding"])
    return named, total


def groundable(truth_json: dict, detections: list[dict], score_thresh: float) -> float:
    """Share of training objects with a same-class detection of IoU > 0.5 scoring >= score_thresh
    (what the project's pointer positives need at the default pos_score_thresh)."""
    from independent_data import _iou
    dets = {e["image_id"]: e["detections"] for e in detections}
    hit = total = 0
    for im in truth_json["images"]:
        if im["role"] != "train":
            continue
        for o in im["objects"]:
            if o["category"] == "plate":
                continue
            total += 1
            hit += any(d["category_name"] == o["category"] and d["score"] >= score_thresh
                       and _iou(d["bbox_xyxy"], o["box"]) > 0.5 for d in dets[im["id"]])
    return hit / max(total, 1)


def report(data: Path) -> dict:
    truth_json = json.loads((data / "truth.json").read_text())
    truth = {im["id"]: im for im in truth_json["images"]}
    cfg = yaml.safe_load((data / "save" / RUN / "config.yml").read_text())     # as resolved by the run
    out = {"groundable_objects": {t: groundable(truth_json, json.loads((data / "detections_indep.json").read_text()), t)
                                  for t in (0.5, 0.25)}}
    for name, run_id in (("greedy", RUN), ("cbs", f"{RUN}_cbs")):
        found = sorted((data / "eval_results").glob(f"{run_id}_test_*.json"))     # <id>_test_<decoding>.json
        if not found:
            continue
        path = found[0]
        res = json.loads(path.read_text())
        named, total = top_held_out_pointed(data, res, truth)
        out[name] = {"project": {"overall": res["overall"], "grounding": res.get("grounding"), "noc": res.get("noc")},
                     "independent": independent_scores(res, truth_json, cfg["image_crop_size"]),
                     "top_held_out_detection_pointed": [named, total]}
    return out


def print_table(summary: dict) -> None:
    def pct(v):
        return "–" if v is None else f"{100 * v:.1f}"
    print("\n| decoding | CIDEr | NOC F1 (project) | NOC F1 (truth) | bus / sheep | plural acc. (project) | "
          "plural acc. (truth) | number words | fine-grained | grounding (project) | grounding (truth, image px) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("greedy", "cbs"):
        if name not in summary:
            continue
        p, t = summary[name]["project"], summary[name]["independent"]
        g = p["grounding"] or {}
        noc = (p["noc"] or {}).get("average", {}).get("f1")
        print(f"| {name} | {100 * p['overall']['CIDEr']:.1f} | {pct(noc)} | {pct(t['noc_f1'])} | "
              f"{pct(t['noc']['bus']['f1'])} / {pct(t['noc']['sheep']['f1'])} | {pct(g.get('plural_accuracy'))} | "
              f"{pct(t['plural_accuracy'])} | {pct(t['number_word_accuracy'])} | {pct(t['fine_grained_accuracy'])} | "
              f"{pct(g.get('grounding_accuracy'))} | {pct(t['grounding_accuracy'])} |")
    for name in ("greedy", "cbs"):
        if name in summary:
            n, tot = summary[name]["top_held_out_detection_pointed"]
            crop = summary[name]["independent"]["grounding_accuracy_if_boxes_in_crop_pixels"]
            print(f"{name}: points at the top held-out detection in {n} / {tot} novel test images; "
                  f"grounding if boxes were crop pixels {pct(crop)}")
    print("training objects with a positive proposal at score >= 0.5 / 0.25: "
          + " / ".join(pct(v) for v in summary["groundable_objects"].values()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "data" / "indep"), help="data folder (created)")
    p.add_argument("--n_images", type=int, default=1800, help="images to generate")
    p.add_argument("--seed", type=int, default=11, help="generator seed")
    p.add_argument("--base_cfg", default=str(ROOT / "cfgs" / "noc_world.yml"), help="config whose budget is used")
    p.add_argument("--report_only", action="store_true", help="only recompute the report from an earlier run")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP_NUM_THREADS for the project's commands (0 = leave unset); on a shared, loaded "
                        "2-core machine 1 avoids threads spinning on each other")
    p.add_argument("extra", nargs="*", help="extra main.py flags after --, e.g. -- --max_epochs 2 (not the benchmark)")
    args = p.parse_args(argv)
    data = Path(args.out).resolve()
    timings = {}
    if not args.report_only:
        if data.exists() and any(data.iterdir()):
            print(f"error: {data} is not empty; remove it or pass another --out", file=sys.stderr)
            return 2
        t0 = time.time()
        write_dataset(data, n_images=args.n_images, seed=args.seed)
        print(f"generated {args.n_images} images in {time.time() - t0:.0f} s", flush=True)
        write_config(data, args.base_cfg, run_id=RUN)
        timings = run_steps(data, list(args.extra), args.threads)
    summary = {"timings": timings, "threads": args.threads, **report(data)}
    (data / "independent_e2e.json").write_text(json.dumps(summary, indent=1))
    print_table(summary)
    print(f"summary written to {data / 'independent_e2e.json'}")
    return 0 if all(t["rc"] == 0 for t in timings.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
