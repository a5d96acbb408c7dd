"""A training or inference session: build everything from options, resume, loop, save, report."""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import torch

from misc.checkpoint import check_compatible, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from misc.config import Options
from misc.dataset import CaptionDataset, DataBundle
from misc.io import DataError, atomic_write_json
from misc.trainer import (apply_noc_word_map, build_model, build_optimizer, evaluate, format_table,
                          make_loader, scst_active, set_lr, setup_runtime, train_one_epoch)

# Options that define the network: taken from a checkpoint when one is loaded for inference.
MODEL_KEYS = ("att_model", "cnn_backend", "rnn_size", "input_encoding_size", "att_hid_size", "att_feat_size",
              "fc_feat_size", "class_emb_size", "loc_emb_size", "image_crop_size", "drop_prob_lm",
              "aoa_heads", "aoa_refine_layers", "grid_size")


def run_id(opt: Options) -> str:
    return opt.id or (Path(opt.path_opt).stem if opt.path_opt else "run")


def checkpoint_dir(opt: Options) -> Path:
    return Path(opt.checkpoint_path) / run_id(opt)


def resume_path(opt: Options) -> Path | None:
    if opt.resume_epoch >= 0:
        return checkpoint_dir(opt) / f"epoch_{opt.resume_epoch}.pth"
    if opt.start_from:
        p = Path(opt.start_from)
        return p / "model.pth" if p.is_dir() else p
    return None


def with_checkpoint_model_options(opt: Options, ckpt: dict) -> Options:
    saved = ckpt.get("config", {})
    return dataclasses.replace(opt, **{k: saved[k] for k in MODEL_KEYS if k in saved})


def train(opt: Options) -> dict:
    device, rank, world = setup_runtime(opt)
    bundle = DataBundle.load(opt)
    ckpt = None
    path = resume_path(opt)
    if path is not None:
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, bundle.vocab.fingerprint(), list(bundle.classes.names), str(path))
        opt = with_checkpoint_model_options(opt, ckpt)
    model = build_model(opt, bundle, device)
    optimizer = build_optimizer(opt, model)
    use_scaler = device.type == "cuda" and opt.amp == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    state = {"epoch": 0, "batch_in_epoch": 0, "iteration": 0, "best_score": -math.inf, "history": [],
             "skipped": [], "stop": False, "progress": rank == 0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if use_scaler and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        for k in ("epoch", "batch_in_epoch", "iteration", "best_score", "history"):
            state[k] = ckpt[k]
        set_rng_state(ckpt["rng"])
    raw = model
    if world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    out_dir = checkpoint_dir(opt)
    writer = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        opt.save(out_dir / "config.yml")
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"))

    def save(name: str) -> None:
        if rank != 0:
            return
        payload = {"model": raw.state_dict(), "optimizer": optimizer.state_dict(),
                   "scaler": scaler.state_dict() if use_scaler else {},
                   "epoch": state["epoch"], "batch_in_epoch": state["batch_in_epoch"],
                   "iteration": state["iteration"], "rng": rng_state(), "config": opt.to_dict(),
                   "fingerprint": bundle.vocab.fingerprint(), "classes": list(bundle.classes.names),
                   "best_score": state["best_score"], "history": state["history"]}
        save_checkpoint(out_dir / name, payload)

    train_ds = CaptionDataset(bundle, "train", train=True, max_images=opt.train_max_images)
    if opt.self_critical or opt.self_critical_after >= 0:
        from misc.scst import SelfCritical
        state["scst"] = SelfCritical(bundle, opt)
    while state["epoch"] < opt.max_epochs and not state["stop"]:
        epoch = state["epoch"]
        lr = set_lr(optimizer, opt, epoch)
        loader = make_loader(train_ds, opt, shuffle=True, epoch=epoch, start_batch=state["batch_in_epoch"],
                             rank=rank, world=world)
        t0 = time.time()
        n_skipped = len(state["skipped"])
        stats = train_one_epoch(model, optimizer, scaler, loader, opt, device, epoch=epoch, state=state,
                                world=world, writer=writer, on_checkpoint=save)
        if state["stop"]:
            save("model.pth")
            break
        state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
        if scst_active(opt, epoch):
            line = f"epoch {epoch} (SCST): loss {stats['loss']:.3f} reward {stats['lm']:.3f} " \
                   f"baseline {stats['bn']:.3f} lr {lr:.2e} {time.time() - t0:.0f}s"
        else:
            line = f"epoch {epoch}: loss {stats['loss']:.3f} (lm {stats['lm']:.3f} bn {stats['bn']:.3f} " \
                   f"fg {stats['fg']:.3f}" + (f" grp {stats['grp']:.3f}" if opt.region_grouping else "") + f") lr {lr:.2e} {time.time() - t0:.0f}s"
        if len(state["skipped"]) > n_skipped:
            line += f" | {len(state['skipped']) - n_skipped} unreadable images skipped"
        record = {"epoch": epoch, **stats}
        if rank == 0 and opt.val_every_epoch > 0 and (epoch + 1) % opt.val_every_epoch == 0:
            result = evaluate(eval_copy(raw, opt, bundle), bundle, opt, device, opt.val_split, meteor=False,
                              max_images=opt.eval_max_images, progress=state["progress"])
            score = result["overall"]["CIDEr"]
            record.update({f"val_{k}": v for k, v in result["overall"].items()})
            line += f" | val CIDEr {score:.3f} B4 {result['overall']['Bleu_4']:.3f}"
            if "grounding" in result:
                line += f" grounding {result['grounding']['grounding_accuracy']:.3f}"
            for k, v in result["overall"].items():
                if v is not None:
                    writer.add_scalar(f"val/{k}", v, state["iteration"])
            if score > state["best_score"]:
                state["best_score"] = score
                state["history"].append(record)
                save("model-best.pth")
            else:
                state["history"].append(record)
        else:
            state["history"].append(record)
        if rank == 0:
            print(line, flush=True)
        save("model.pth")
        if opt.keep_epoch_checkpoints and rank == 0:
            save(f"epoch_{epoch + 1}.pth")
            old = epoch + 1 - opt.keep_epoch_checkpoints
            if opt.keep_epoch_checkpoints > 0 and old > 0 and (out_dir / f"epoch_{old}.pth").exists():
                (out_dir / f"epoch_{old}.pth").unlink()
    if state["skipped"]:
        print(f"warning: {len(state['skipped'])} unreadable images skipped (e.g. {state['skipped'][0]})")
    if writer is not None:
        writer.close()
    return {"dir": str(out_dir), "state": {k: v for k, v in state.items() if k not in ("skipped", "scst")}}


def eval_copy(raw, opt, bundle):
    """The model to evaluate: with decode_noc, a copy whose held-out classes borrow embeddings."""
    if not (opt.decode_noc and opt.noc_word_map):
        return raw
    model = copy.deepcopy(raw)
    apply_noc_word_map(model, opt, bundle)
    return model


def inference(opt: Options, split: str | None = None) -> dict:
    """Evaluate a checkpoint on a split; print a table; write eval_results/<id>_<split>.json."""
    if not opt.start_from:
        raise DataError("--inference_only True needs --start_from save/<id> (or a .pth file)")
    device, _, _ = setup_runtime(opt)
    bundle = DataBundle.load(opt)
    ckpt = load_checkpoint(best_or_last(opt))
    check_compatible(ckpt, bundle.vocab.fingerprint(), list(bundle.classes.names), opt.start_from)
    opt = with_checkpoint_model_options(opt, ckpt)
    model = build_model(opt, bundle, device)
    model.load_state_dict(ckpt["model"])
    split = split or opt.eval_split
    result = evaluate(eval_copy(model, opt, bundle), bundle, opt, device, split, max_images=opt.eval_max_images)
    name = opt.id or Path(opt.start_from).stem if Path(opt.start_from).is_file() else opt.id or Path(opt.start_from).name
    out = Path("eval_results") / f"{name}_{split}.json"
    atomic_write_json(out, {"overall": result["overall"], "grounding": result.get("grounding"),
                            "noc": result.get("noc"), "imgToEval": result["predictions"],
                            "config": {"beam_size": opt.beam_size, "cbs": opt.cbs, "cbs_mode": opt.cbs_mode,
                                       "cbs_tag_size": opt.cbs_tag_size, "split": split}})
    for p in result["predictions"][:5]:
        print(f"image {p['image_id']}: {p['tagged']}")
    print(f"evaluated {result['n_images']} images of split '{split}'")
    print(format_table(result))
    print(f"results written to {out}")
    result["path"] = str(out)
    return result


def best_or_last(opt: Options) -> Path:
    p = Path(opt.start_from)
    if p.is_dir():
        names = ("model-best.pth", "model.pth") if opt.load_best_score else ("model.pth", "model-best.pth")
        for n in names:
            if (p / n).is_file():
                return p / n
        raise DataError(f"no checkpoint in {p} (expected {' or '.join(names)})")
    return p
