"""Can NBT learn 80 real images by heart? coco-mini's train2017 images (real COCO captions, real
boxes), prepared with the project's own commands, trained on the CPU until the training loss
plateaus, then decoded on the same images.

    python benchmarks/memorise_coco_mini.py [--out /tmp/memorise] [--max_epochs 60]

Two runs: GT boxes as proposals (--det_oracle True) and FastestDet's detections (the weak detector
of coco-mini's README). Reported per run: the loss curve, CIDEr-D and BLEU-4 on the memorised set,
how many greedy captions equal one of the image's five references, the UNK rate of the training
targets and of the generated words, and the grounding accuracy. Not a test: a model that cannot
memorise 80 real images has a bug, and this is where it shows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import _checkout  # noqa: E402,F401  (`nbt` = this checkout)
MINI = next((p / "shared" / "data" / "coco-mini" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
            ROOT.parent / "shared" / "data" / "coco-mini")   # next to the checkout, or to a folder above it

CONFIG = """# coco-mini, memorisation: a world-sized model on 80 real images, no random crop, no dropout
dataset: coco
input_json: {out}/cap.json
input_dic: {out}/dic.json
image_path: {mini}
proposal_h5: {out}/det.h5
instances_json: [{mini}/annotations/instances_train2017.json, {mini}/annotations/instances_val2017.json]
class_name_file: {root}/data/coco/coco_class_name.txt
cached_tokens: {out}/df.json
cnn_backend: tiny
pretrained_cnn: False
finetune_cnn: True
att_feat_size: 128
rnn_size: 256
input_encoding_size: 128
att_hid_size: 128
class_emb_size: 64
loc_emb_size: 64
grid_size: 8
image_size: 192
image_crop_size: 192
drop_prob_lm: 0.0
seq_length: 20
batch_size: 8
learning_rate: 0.004
learning_rate_decay_start: -1
grad_clip: 2.0
num_workers: 2
val_every_epoch: 0
eval_split: ''
disp_interval: 0
keep_epoch_checkpoints: 0
"""


def prepare(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    subprocess.run([py, str(ROOT / "prepro" / "prepro_dic_coco.py"), "--captions_json",
                    str(MINI / "annotations" / "captions_train2017.json"),
                    str(MINI / "annotations" / "captions_val2017.json"),
                    "--class_name_file", str(ROOT / "data" / "coco" / "coco_class_name.txt"),
                    "--word_count_threshold", "0", "--output_dic", str(out / "dic.json"),
                    "--output_cap", str(out / "cap.json"), "--output_df", str(out / "df.json")], check=True)
    subprocess.run([py, str(ROOT / "prepro" / "prepro_det.py"), "--input_dic", str(out / "dic.json"),
                    "--class_name_file", str(ROOT / "data" / "coco" / "coco_class_name.txt"),
                    "--output_h5", str(out / "det.h5"), "--from_json", str(MINI / "detections_fastestdet.json")],
                   check=True)
    cfg = out / "memorise.yml"
    cfg.write_text(CONFIG.format(out=out, mini=MINI, root=ROOT))
    return cfg


def run(cfg: Path, out: Path, name: str, oracle: bool, max_epochs: int) -> dict:
    from nbt.misc.config import build_options
    from nbt.misc.session import inference, train
    opt = build_options(["--path_opt", str(cfg), "--det_oracle", str(oracle), "--id", name,
                         "--checkpoint_path", str(out / "save"), "--max_epochs", str(max_epochs), "--overwrite", "True"])
    t0 = time.time()
    history = train(opt)["state"]["history"]
    seconds = time.time() - t0
    result = inference(dataclasses.replace(opt, start_from=str(out / "save" / name), eval_split="train",
                                           load_best_score=False, overwrite=True), "train")
    return summarise(opt, result, history, seconds)


def summarise(opt, result: dict, history: list, seconds: float) -> dict:
    from nbt.misc.dataset import DataBundle
    bundle = DataBundle.load(opt)
    rows = {int(bundle.dic["images"][r]["id"]): r for r in bundle.rows("train")}
    refs = {i: {" ".join(c) for c in bundle.captions[r]} for i, r in rows.items()}
    preds = result["predictions"]
    exact = sum(p["caption"] in refs[p["image_id"]] for p in preds)
    targets = [t for r in rows.values() for c in bundle.captions[r] for t in c]
    unk_targets = sum(t not in bundle.vocab.word_to_ix for t in targets) / len(targets)
    words = [w for p in preds for w in p["caption"].split()]
    g = result.get("grounding") or {}
    return {"seconds": round(seconds), "epochs": len(history),
            "loss_curve": [round(h["loss"], 3) for h in history[:: max(1, len(history) // 10)]] + [round(history[-1]["loss"], 3)],
            "CIDEr": result["overall"]["CIDEr"], "Bleu_4": result["overall"]["Bleu_4"],
            "exact": f"{exact}/{len(preds)}", "unk_targets": unk_targets,
            "unk_generated": sum(w == "UNK" for w in words) / max(len(words), 1),
            "grounding_accuracy": g.get("grounding_accuracy"), "visual_words": g.get("visual_words"),
            "examples": [p["tagged"] for p in preds[:5]]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/memorise_coco_mini", help="working folder (data, runs)")
    p.add_argument("--max_epochs", type=int, default=60, help="training epochs of each run (10 steps each)")
    p.add_argument("--runs", default="oracle,fastestdet", help="which runs (two processes can share the work)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if not MINI.is_dir():
        print(f"coco-mini not found at {MINI}", file=sys.stderr)
        return 2
    out = Path(args.out)
    cfg = prepare(out)
    runs = {"oracle": True, "fastestdet": False}
    report = {name: run(cfg, out, name, runs[name], args.max_epochs) for name in args.runs.split(",")}
    print(json.dumps(report, indent=1))
    (out / f"report_{'_'.join(report)}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
