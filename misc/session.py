"""A training or inference session: resume -> epochs (train, validate, save, rotate) -> report.

Run folders (`<checkpoint_path>/<id>`) are never overwritten by surprise: a resumed run keeps
writing where it was resumed from (unless `--id` names another folder), a new run into a folder
that holds another run's checkpoints is refused without `--overwrite`, and a lock file stops two
processes writing one folder. SIGINT / SIGTERM finish the current step, write a resumable
checkpoint and raise `Interrupted` (main.py exits 130 / 143).
"""
from __future__ import annotations

import copy
import dataclasses
import errno
import fcntl
import os
import signal
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

from nbt.misc.builders import apply_noc_word_map, build_model, build_optimizer
from nbt.misc.checkpoint import check_compatible, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from nbt.misc.config import POINTER_DECODERS, Options
from nbt.misc.dataset import CaptionDataset, DataBundle
from nbt.misc.inference import Decoding
from nbt.misc.io import DataError, atomic_write_json, read_json
from nbt.misc.runtime import setup_runtime
from nbt.misc.trainer import (ProgressLog, StopRequest, TrainState, evaluate, format_duration, format_table,
                              make_loader, scst_active, set_lr, train_one_epoch)

# Options that define the network: taken from a checkpoint when one is loaded.
MODEL_KEYS = ("att_model", "cnn_backend", "rnn_size", "input_encoding_size", "att_hid_size", "att_feat_size",
              "class_emb_size", "loc_emb_size", "image_crop_size", "drop_prob_lm", "aoa_heads",
              "aoa_refine_layers", "grid_size", "region_grouping", "roi_align", "sentinel_cell", "sentinel_key",
              "extra_word_logit", "fine_head")
# The data a run was trained on and its geometry: at inference the checkpoint's values win over a
# config file's (cfgs/normal_coco_res101.yml's 512 px must not meet a run trained at 256 px); a
# value given on the command line wins, with a warning when it differs from training.
DATA_KEYS = ("dataset", "data_path", "input_json", "input_dic", "image_path", "proposal_h5", "instances_json",
             "class_name_file", "image_size", "image_crop_size", "max_proposal", "seq_length")
CHECKPOINT_GLOBS = ("model.pth", "model-best.pth", "epoch_*.pth")


class Interrupted(Exception):
    """Training stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- run folders ------------------------------------------------------------------------------
def run_dir(opt: Options) -> Path:
    """--id names the folder; else a resumed run continues in its own folder; else the config's name."""
    if opt.id:
        return Path(opt.checkpoint_path) / opt.id
    if opt.start_from:
        p = Path(opt.start_from)
        return p.parent if is_checkpoint_file(p) else p
    return Path(opt.checkpoint_path) / (Path(opt.path_opt).stem if opt.path_opt else "run")


def resume_path(opt: Options) -> Path | None:
    if opt.resume_epoch >= 0:
        return epoch_checkpoint(Path(opt.checkpoint_path) / opt.id, opt.resume_epoch)
    if opt.start_from:
        p = Path(opt.start_from)
        if p.is_dir() and not (p / "model.pth").is_file() and (p / "model-best.pth").is_file():
            return p / "model-best.pth"            # e.g. a folder of the original's (model-best.pth only)
        return p / "model.pth" if p.is_dir() else p
    return None


def epoch_file(epoch: int) -> str:
    """The checkpoint written at the end of `epoch`, numbered from 0 as the log prints them."""
    return f"epoch_{epoch}.pth"


def epoch_checkpoint(folder: Path, epoch: int) -> Path:
    """The checkpoint of the end of `epoch` (from 0, as the log prints it): epoch_<epoch>.pth. Runs
    of earlier versions named files by epochs completed (their epoch_<epoch + 1>.pth); a file is
    taken by the epoch it holds, never by its name alone."""
    for p in (folder / epoch_file(epoch), folder / epoch_file(epoch + 1)):
        if p.is_file() and load_checkpoint(p).get("epoch") == epoch + 1:
            if p.name != epoch_file(epoch):
                print(f"note: {p} holds the end of epoch {epoch} (an earlier version named files by epochs completed)")
            return p
    held = sorted(int(ck["epoch"]) - 1 for ck in map(load_checkpoint, folder.glob("epoch_*.pth")) if "epoch" in ck) \
        if folder.is_dir() else []
    have = f"it holds epochs {', '.join(map(str, held))}" if held else "it holds no epoch checkpoint"
    raise DataError(f"{folder}: no checkpoint of the end of epoch {epoch} (epochs counted from 0, as the log "
                    f"prints them); {have}")


def is_checkpoint_file(p: Path) -> bool:
    """--start_from names a checkpoint file (else a run folder, which may not exist yet)."""
    return p.is_file() or p.suffix == ".pth"


def resumes_in(out_dir: Path, resume: Path | None) -> bool:
    return resume is not None and resume.resolve().parent == out_dir.resolve()


def checkpoints_in(folder: Path) -> list[Path]:
    return sorted(p for g in CHECKPOINT_GLOBS for p in folder.glob(g)) if folder.is_dir() else []


def check_run_dir(out_dir: Path, resume: Path | None, overwrite: bool) -> None:
    """Refuse to start a new run over another run's checkpoints unless `overwrite`."""
    old = checkpoints_in(out_dir)
    if old and not resumes_in(out_dir, resume) and not overwrite:
        raise DataError(f"{out_dir} already holds a run ({old[0].name}): resume it with --start_from "
                        f"{out_dir}, choose another --id, or pass --overwrite to replace it")


def claim_run_dir(out_dir: Path, resume: Path | None, overwrite: bool) -> None:
    """With the lock held: check again, remove a replaced run's checkpoints (overwrite) and the
    temporary files of interrupted checkpoint writes."""
    check_run_dir(out_dir, resume, overwrite)
    if not resumes_in(out_dir, resume):
        for p in checkpoints_in(out_dir):
            p.unlink()
    for tmp in out_dir.glob(".*.tmp"):
        tmp.unlink()


class RunLock:
    """An exclusive lock on a run folder (`.lock`, holding the owner's pid), released on exit or
    when the process dies."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.fd = -1

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:      # a POSIX lock: the loader's forked workers do not inherit it (flock's they would,
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)     # and keep a killed run locked)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            owner = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise DataError(f"{self.path.parent} is in use by another run (pid {owner}); wait for it "
                            f"or choose another --id") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        fcntl.lockf(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def with_data_thresholds(opt: Options, bundle: DataBundle) -> Options:
    """The score thresholds the data set calibrated for its detector (DataBundle.load)."""
    return dataclasses.replace(opt, pos_score_thresh=bundle.opt.pos_score_thresh,
                               cbs_score_thresh=bundle.opt.cbs_score_thresh)


def with_checkpoint_model_options(opt: Options, ckpt: dict) -> Options:
    """The network's shape comes from the checkpoint; a differing command-line value is noted. Its
    weights too: no pretrained CNN is read (a converted model of the original has a CNN that no
    weight file of torchvision fits)."""
    saved = ckpt.get("config", {})
    changed = [k for k in MODEL_KEYS if k in saved and saved[k] != getattr(opt, k)]
    if changed:
        print(f"note: the checkpoint defines the model: {', '.join(f'{k}={saved[k]!r}' for k in changed)}")
    return dataclasses.replace(opt, pretrained_cnn=False, cnn_weights="",
                               **{k: saved[k] for k in MODEL_KEYS if k in saved})


def with_checkpoint_options(opt: Options, ckpt: dict, cli_keys=None) -> Options:
    """At inference: the network's shape (MODEL_KEYS) from the checkpoint, and its data and
    geometry (DATA_KEYS) too unless the command line gave them (`cli_keys`; None: every value
    of `opt` was chosen by its caller, as a program's are). A command-line value that differs
    from training is one warning line: ignored for the network's shape, used for the data. The
    weights come from the checkpoint: no pretrained CNN is read."""
    saved = ckpt.get("config", {})
    given = set(Options.fields()) if cli_keys is None else set(cli_keys)
    changes = {}
    for k in dict.fromkeys(MODEL_KEYS + DATA_KEYS):
        if k not in saved:
            continue
        differs = saved[k] != getattr(opt, k)
        if k in DATA_KEYS and k in given:
            if differs:
                print(f"warning: --{k} {_shown(getattr(opt, k))} differs from the run's training value "
                      f"{_shown(saved[k])}; using {_shown(getattr(opt, k))}", file=sys.stderr)
            continue
        if differs and k in given:
            print(f"warning: --{k} {_shown(getattr(opt, k))} is ignored: the checkpoint defines the model "
                  f"({k} {_shown(saved[k])})", file=sys.stderr)
        changes[k] = saved[k]
    return dataclasses.replace(opt, pretrained_cnn=False, cnn_weights="", **changes)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# -- training ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """What one training session holds."""
    opt: Options
    bundle: DataBundle
    model: torch.nn.Module          # DDP-wrapped under torchrun
    raw: torch.nn.Module            # the plain model (checkpoints, evaluation)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    out_dir: Path
    device: torch.device
    rank: int
    world: int
    writer: object = None
    scst: object = None
    skipped: list = dataclasses.field(default_factory=list)

    def save(self, name: str) -> None:
        if self.rank != 0:
            return
        payload = {"model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
                   "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                   **self.state.to_dict(), "rng": rng_state(), "config": self.opt.to_dict(),
                   "fingerprint": self.bundle.vocab.fingerprint(), "classes": list(self.bundle.classes.names)}
        save_checkpoint(self.out_dir / name, payload)


def train(opt: Options) -> dict:
    """A whole training run -> {"dir": run folder, "state": its final TrainState, and "stop"}.
    Nothing is written before the data and the checkpoint to resume from have been read."""
    device, rank, world = setup_runtime(opt)
    out_dir, resume = run_dir(opt), resume_path(opt)
    if rank == 0:
        check_run_dir(out_dir, resume, opt.overwrite)
    run = build_run(opt, device, rank, world, out_dir, resume)
    with RunLock(out_dir) if rank == 0 else nullcontext(), StopRequest() as stop:
        if rank == 0:
            claim_run_dir(out_dir, resume, opt.overwrite)
            run.opt.save(out_dir / "config.yml")
            from torch.utils.tensorboard import SummaryWriter
            run.writer = SummaryWriter(str(out_dir / "tb"))
        try:
            stopped = run_epochs(run, stop)
        finally:
            if run.writer is not None:
                run.writer.close()
    if run.skipped:
        print(f"warning: {len(run.skipped)} unreadable images skipped (e.g. {run.skipped[0]})")
    return {"dir": str(out_dir), "state": {**run.state.to_dict(), "stop": stopped}}


def build_run(opt: Options, device, rank: int, world: int, out_dir: Path, resume: Path | None) -> Run:
    ckpt = None
    if resume is not None:             # the network's options first: the data is read at its image size
        ckpt = load_checkpoint(resume)
        if "original" in ckpt and resumes_in(out_dir, resume):
            raise DataError(f"{resume.parent} holds a model of the original NeuralBabyTalk: give --id NAME to "
                            f"fine-tune it into {Path(opt.checkpoint_path) / 'NAME'} (its own folder is not written)")
        opt = with_checkpoint_model_options(opt, ckpt)
    bundle = DataBundle.load(opt)
    opt = with_data_thresholds(opt, bundle)           # saved with the run, for the API and the demo
    if ckpt is not None:
        check_compatible(ckpt, bundle.vocab.fingerprint(), list(bundle.classes.names), str(resume))
    if opt.region_grouping and opt.att_model in POINTER_DECODERS and not len(bundle.boxes.image_ids):
        warnings.warn("region_grouping: no GT boxes (instances_json), so no grouping supervision at all; "
                      "the module learns from the caption losses only")
    model = build_model(opt, bundle, device)
    optimizer = build_optimizer(opt, model)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and opt.amp == "fp16")
    state = TrainState()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:              # a converted model of the original has weights only: a new run
            optimizer.load_state_dict(ckpt["optimizer"])
            if scaler.is_enabled() and ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            state = TrainState.from_checkpoint(ckpt)
            set_rng_state(ckpt["rng"])
    raw = model
    if world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    scst = None
    if opt.self_critical or opt.self_critical_after >= 0:
        from nbt.misc.scst import SelfCritical
        scst = SelfCritical(bundle, opt)
    return Run(opt, bundle, model, raw, optimizer, scaler, state, out_dir, device, rank, world, scst=scst)


def run_epochs(run: Run, stop: StopRequest) -> bool:
    """Epochs until max_epochs; True when max_iters stopped the run early."""
    opt, state = run.opt, run.state
    train_ds = CaptionDataset(run.bundle, "train", train=True, max_images=opt.train_max_images)
    durations = []
    while state.epoch < opt.max_epochs:
        t0 = time.time()
        stats, lr = train_epoch(run, train_ds, stop)
        if stop.signum:
            run.save("model.pth")
            if run.rank == 0:
                print(f"interrupted: resumable checkpoint {run.out_dir / 'model.pth'} (epoch {state.epoch}, "
                      f"batch {state.batch_in_epoch}); resume with the same options plus "
                      f"--start_from {run.out_dir}", flush=True)
            raise Interrupted(stop.signum)
        if 0 < opt.max_iters <= state.iteration and state.batch_in_epoch < run_len(run, train_ds):
            run.save("model.pth")
            return True
        durations.append(time.time() - t0)
        end_epoch(run, stats, lr, durations)
        if 0 < opt.max_iters <= state.iteration:
            return True
    return False


def run_len(run: Run, ds) -> int:
    per_step = run.opt.batch_size * run.world
    return (len(ds) + per_step - 1) // per_step


def train_epoch(run: Run, train_ds, stop: StopRequest) -> tuple[dict, float]:
    opt, state = run.opt, run.state
    epoch = state.epoch
    lr = set_lr(run.optimizer, opt, epoch)
    loader = make_loader(train_ds, opt, shuffle=True, epoch=epoch, start_batch=state.batch_in_epoch,
                         rank=run.rank, world=run.world)
    log = ProgressLog(epoch=epoch, total=run_len(run, train_ds), done=state.batch_in_epoch,
                      disp_interval=opt.disp_interval, writer=run.writer, show=run.rank == 0)
    scst = run.scst if scst_active(opt, epoch) else None
    try:
        stats = train_one_epoch(run.model, run.optimizer, run.scaler, loader, opt, run.device, epoch=epoch,
                                state=state, world=run.world, scst=scst, log=log, stop=stop,
                                on_checkpoint=run.save, skipped=run.skipped)
    finally:
        log.close()
    return stats, lr


def end_epoch(run: Run, stats: dict, lr: float, durations: list[float]) -> None:
    """Count the epoch, validate, keep the best and last checkpoints, rotate epoch files, report."""
    opt, state = run.opt, run.state
    epoch = state.epoch
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    kind = " (SCST)" if scst_active(opt, epoch) else ""
    line = f"epoch {epoch}{kind}: " + " ".join(f"{k} {v:.3f}" for k, v in stats.items()) + \
        f" lr {lr:.2e} {durations[-1]:.0f}s"
    record = {"epoch": epoch, **stats}
    best = False
    if run.rank == 0 and opt.val_every_epoch > 0 and (epoch + 1) % opt.val_every_epoch == 0:
        result = evaluate(eval_copy(run.raw, opt, run.bundle), run.bundle, opt, run.device, opt.val_split,
                          meteor=False, max_images=opt.eval_max_images, progress=True)
        scores = {**result["overall"], **{k: v for k, v in (result.get("grounding") or {}).items()
                                          if isinstance(v, float)}}
        record.update({f"val_{k}": v for k, v in scores.items()})
        for k, v in scores.items():
            if v is not None:
                run.writer.add_scalar(f"val/{k}", v, state.iteration)
        line += f" | val CIDEr {100 * scores['CIDEr']:.1f} B4 {100 * scores['Bleu_4']:.1f}"
        g = result["grounding"]
        if g["visual_words"]:
            line += (f" grounding {100 * g['grounding_accuracy']:.1f} ({g['grounded_words']} of "
                     f"{g['visual_words']} words)")
        else:
            line += " grounding - (0 visual words)"
        best = scores["CIDEr"] > state.best_score
        if best:
            state.best_score = scores["CIDEr"]
    state.history.append(record)
    left = (opt.max_epochs - state.epoch) * sum(durations) / len(durations)
    if run.rank == 0:
        print(line + (f" | about {format_duration(left)} of training left" if state.epoch < opt.max_epochs else ""),
              flush=True)
    if best:
        run.save("model-best.pth")
    run.save("model.pth")
    if opt.keep_epoch_checkpoints and run.rank == 0:
        run.save(epoch_file(epoch))                   # numbered as the log line above numbers the epoch
        old = run.out_dir / epoch_file(epoch - opt.keep_epoch_checkpoints)
        if opt.keep_epoch_checkpoints > 0 and old.exists():
            old.unlink()


def eval_copy(raw, opt, bundle):
    """The model to evaluate: with decode_noc, a copy whose held-out classes borrow embeddings."""
    if not (opt.decode_noc and opt.noc_word_map):
        return raw
    model = copy.deepcopy(raw)
    apply_noc_word_map(model, opt, bundle)
    return model


# -- inference ------------------------------------------------------------------------------
def decoding_name(opt: Options) -> str:
    return Decoding.from_options(opt).name


def results_path(opt: Options, split: str) -> Path:
    """eval_results/<run>_<split>_<decoding>[_first<N>].json: a partial evaluation
    (--eval_max_images N) never takes the name of the whole split's results."""
    p = Path(opt.start_from)
    name = opt.id or (p.stem if is_checkpoint_file(p) else p.name)
    part = f"_first{opt.eval_max_images}" if opt.eval_max_images >= 0 else ""
    return Path("eval_results") / f"{name}_{split}_{decoding_name(opt)}{part}.json"


def check_results_free(out: Path, source: dict, overwrite: bool) -> None:
    """Results of another checkpoint under the same name are never replaced silently."""
    if not out.is_file() or overwrite:
        return
    try:
        old = read_json(out).get("checkpoint")
    except (DataError, AttributeError):
        old = None
    if old != source:
        raise DataError(f"{out} holds results of another checkpoint ({(old or {}).get('path', 'unknown')}); "
                        f"pass --overwrite to replace them, or --id NAME to write elsewhere")


def inference(opt: Options, split: str | None = None, cli_keys=None) -> dict:
    """Evaluate a checkpoint on a split; print a table; write eval_results/<id>_<split>_<decoding>.json.
    The checkpoint's network, data and geometry win over `opt`'s except for the options in
    `cli_keys` (the command line's; None: all of opt's, see with_checkpoint_options)."""
    if not opt.start_from:
        raise DataError("--inference_only True needs --start_from save/<id> (or a .pth file)")
    split = split or opt.eval_split or "test"
    ckpt_path = best_or_last(opt)
    out = results_path(opt, split)
    ckpt = load_checkpoint(ckpt_path)
    source = {"path": str(ckpt_path.resolve()), "iteration": ckpt.get("iteration")}
    check_results_free(out, source, opt.overwrite)
    device, _, _ = setup_runtime(opt)
    opt = with_checkpoint_options(opt, ckpt, cli_keys)
    bundle = DataBundle.load(opt)
    opt = with_data_thresholds(opt, bundle)
    check_compatible(ckpt, bundle.vocab.fingerprint(), list(bundle.classes.names), opt.start_from)
    model = build_model(opt, bundle, device)
    model.load_state_dict(ckpt["model"])
    result = evaluate(eval_copy(model, opt, bundle), bundle, opt, device, split, max_images=opt.eval_max_images)
    atomic_write_json(out, {"overall": result["overall"], "grounding": result.get("grounding"),
                            "noc": result.get("noc"), "imgToEval": result["predictions"], "checkpoint": source,
                            "config": {"beam_size": opt.beam_size, "cbs": opt.cbs, "cbs_mode": opt.cbs_mode,
                                       "cbs_tag_size": opt.cbs_tag_size, "split": split}})
    for p in result["predictions"][:5]:
        print(f"image {p['image_id']}: {p['tagged']}")
    print(f"evaluated {result['n_images']} images of split '{split}' ({decoding_name(opt)})")
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
                if n != names[0]:
                    why = " (no validation has run: see --val_every_epoch)" if names[0] == "model-best.pth" else ""
                    print(f"note: {p} has no {names[0]}{why}; evaluating {n}")
                return p / n
        raise DataError(f"no checkpoint in {p} (expected {' or '.join(names)})")
    if not p.is_file():
        raise DataError(f"no checkpoint at {p}")
    return p
