"""Training and evaluation loops (torchvision references style): train_one_epoch / evaluate.

- seeded and reproducible on a CPU; a run stopped by a signal or killed and resumed from its last
  checkpoint ends bit-identical to an uninterrupted one
- gradient accumulation and DDP normalise the loss by the *global* token count, so both give the
  gradient of one large batch
- AMP on GPU (bf16, or fp16 with a GradScaler)
- each objective reports its own named numbers: XE (words, plural, fine, grouping) or SCST
  (reward, baseline)
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from nbt.misc.dataset import CaptionDataset, EpochBatchSampler, collate
from nbt.misc.evaluation import ACCURACY_COUNTS, CaptionEvaluator
from nbt.misc.inference import Decoding, decode_batch, inference_mode
from nbt.misc.losses import caption_targets, combine, loss_weights
from nbt.misc.runtime import autocast, to_device

XE_NUMBERS = ("loss", "words", "plural", "fine", "grouping")     # what an XE step reports


@dataclass
class TrainState:
    """Everything a checkpoint needs to resume a run exactly (besides model, optimiser, RNG)."""
    epoch: int = 0                   # epochs completed
    batch_in_epoch: int = 0          # batches of the current epoch already trained
    iteration: int = 0               # optimiser steps so far
    best_score: float = -math.inf    # best validation CIDEr
    history: list = field(default_factory=list)   # one record per epoch

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "iteration": self.iteration,
                "best_score": self.best_score, "history": self.history}

    @staticmethod
    def from_checkpoint(ckpt: dict) -> "TrainState":
        return TrainState(ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["iteration"], ckpt["best_score"],
                          list(ckpt["history"]))


class StopRequest:
    """SIGINT / SIGTERM ask the training loop to stop after the current step (a second signal
    stops at once). Installed only in the main thread; restores the previous handlers on exit."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self) -> "StopRequest":
        if threading_is_main():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing the current step, then writing a checkpoint "
              f"(send it again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def requested(self, world: int) -> bool:
        """All ranks stop at the same step: a stop on any rank is a stop on every rank."""
        if world == 1:
            return bool(self.signum)
        flag = torch.tensor([self.signum], dtype=torch.long)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag)
        return bool(self.signum)


def threading_is_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _worker_ignores_signals(_worker_id: int) -> None:
    """Ctrl-C reaches every process of the terminal: the workers keep serving batches while the
    main process finishes its step and writes the checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(ds, opt, *, shuffle: bool, epoch: int = 0, start_batch: int = 0, rank: int = 0,
                world: int = 1, batch_size: int | None = None) -> DataLoader:
    sampler = EpochBatchSampler(len(ds), batch_size or opt.batch_size, shuffle=shuffle, seed=opt.seed,
                                epoch=epoch, start_batch=start_batch, rank=rank, world_size=world)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=opt.num_workers,
                      generator=torch.Generator().manual_seed(opt.seed), persistent_workers=False,
                      pin_memory=False, worker_init_fn=_worker_ignores_signals if opt.num_workers else None)


def scst_active(opt, epoch: int) -> bool:
    return opt.self_critical or (opt.self_critical_after >= 0 and epoch >= opt.self_critical_after)


def set_lr(optimizer, opt, epoch: int) -> float:
    """lr x decay_rate every `decay_every` epochs from `decay_start` (0-based epochs); SCST runs
    at the constant `scst_learning_rate` (AoANet recipe)."""
    if scst_active(opt, epoch):
        for g in optimizer.param_groups:
            g["lr"] = opt.scst_learning_rate
        return opt.scst_learning_rate
    factor = 1.0
    if opt.learning_rate_decay_start >= 0 and epoch >= opt.learning_rate_decay_start:
        factor = opt.learning_rate_decay_rate ** ((epoch - opt.learning_rate_decay_start) // opt.learning_rate_decay_every)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]


def ss_prob(opt, epoch: int) -> float:
    if opt.scheduled_sampling_start < 0 or epoch < opt.scheduled_sampling_start:
        return 0.0
    frac = (epoch - opt.scheduled_sampling_start) // opt.scheduled_sampling_increase_every
    return min(opt.scheduled_sampling_increase_prob * frac, opt.scheduled_sampling_max_prob)


def batch_counts(batch: dict, seq_length: int) -> tuple[float, float]:
    """Counted tokens (words + first EOS) and visual tokens of a batch, before any forward."""
    words = batch["words"].reshape(-1, batch["words"].shape[-1])
    _, mask = caption_targets(words, seq_length + 1)
    return float(mask.sum()), float((batch["vis_cls"] > 0).sum())


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """BatchNorm layers to eval mode: normalise with, and stop updating, the running statistics.

    Used for SCST, which fine-tunes the policy: with BatchNorm in training mode the CNN's running
    statistics drift even at a zero learning rate (batches of 20 make a noisy moving average);
    README, "SCST keeps BatchNorm statistics fixed"."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# -- one step, one epoch -----------------------------------------------------------------------
def train_step(model, optimizer, scaler, window: list[dict], opt, device, *, epoch: int, world: int,
               scst=None) -> dict:
    """One optimiser step over `window` (grad_accum batches) -> the step's named numbers."""
    counts = torch.tensor([sum(batch_counts(b, opt.seq_length)[i] for b in window) for i in (0, 1)])
    if world > 1:
        dist.all_reduce(counts)
    weights = loss_weights(opt)
    optimizer.zero_grad(set_to_none=True)
    numbers: dict[str, float] = {}
    for b in window:
        b = to_device(b, device)
        with autocast(device, opt.amp):
            out = model(b, ss_prob=ss_prob(opt, epoch), scst=scst)
        if scst is None:
            loss = combine(out, weights, float(counts[0]), float(counts[1]))
            scaler.scale(loss["loss"] * world).backward()
            parts = {k: loss[k] for k in XE_NUMBERS}
        else:
            scaler.scale(out["loss"] / len(window)).backward()
            parts = {"loss": out["loss"] / len(window), "reward": out["reward"] / len(window),
                     "baseline": out["baseline"] / len(window)}
        for k, v in parts.items():
            numbers[k] = numbers.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], opt.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return numbers


def train_one_epoch(model, optimizer, scaler, loader, opt, device, *, epoch: int, state: TrainState,
                    world: int = 1, scst=None, log=None, stop: StopRequest | None = None,
                    on_checkpoint=None, skipped: list | None = None) -> dict:
    """Train until the loader ends, a signal asks to stop, or max_iters is reached -> the epoch's
    mean named numbers; state.batch_in_epoch counts the batches done (for an exact resume)."""
    model.train()
    if scst is not None:
        freeze_batchnorm_stats(model)
    sums: dict[str, float] = {}
    n_steps = 0
    it = iter(loader)
    while True:
        window = [b for b in (next(it, None) for _ in range(opt.grad_accum)) if b is not None]
        if not window:
            break
        if skipped is not None:
            skipped.extend(s for b in window for s in b.get("skipped", []))
        live = [b for b in window if not b.get("empty")]
        if live:
            numbers = train_step(model, optimizer, scaler, live, opt, device, epoch=epoch, world=world, scst=scst)
            state.iteration += 1
            n_steps += 1
            for k, v in numbers.items():
                sums[k] = sums.get(k, 0.0) + v
            if log is not None:
                log.step(state, numbers, optimizer.param_groups[0]["lr"], images=sum(len(b["rows"]) for b in live))
        state.batch_in_epoch += len(window)
        if log is not None:
            log.advance(len(window))
        if on_checkpoint and opt.save_every_iters and state.iteration % opt.save_every_iters == 0:
            on_checkpoint("model.pth")
        if (stop is not None and stop.requested(world)) or 0 < opt.max_iters <= state.iteration:
            break
    return {k: v / max(n_steps, 1) for k, v in sums.items()}


class ProgressLog:
    """Progress of one epoch: a tqdm bar on a terminal, and every `disp_interval` iterations a
    line (iteration, losses, images/s, time left in the epoch) that also reaches a log file; every
    step's numbers go to TensorBoard."""

    def __init__(self, *, epoch: int, total: int, done: int, disp_interval: int, writer=None, show: bool = True):
        self.epoch, self.total, self.done, self.every = epoch, total, done, disp_interval
        self.writer = writer
        self.show = show
        self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch}", leave=False,
                        disable=None if show else True)
        self.t0, self.images, self.start_done = time.time(), 0, done

    def step(self, state: TrainState, numbers: dict, lr: float, images: int) -> None:
        self.images += images
        if self.writer is not None:
            for k, v in numbers.items():
                self.writer.add_scalar(f"train/{k}", v, state.iteration)
            self.writer.add_scalar("train/lr", lr, state.iteration)
        self.bar.set_postfix(loss=f"{numbers['loss']:.3f}")
        if self.show and self.every and state.iteration % self.every == 0:
            elapsed = time.time() - self.t0
            done = state.batch_in_epoch + 1 - self.start_done
            left = elapsed / max(done, 1) * (self.total - state.batch_in_epoch - 1)
            parts = " ".join(f"{k} {v:.3f}" for k, v in numbers.items())
            tqdm.write(f"iter {state.iteration} (epoch {self.epoch}, batch {state.batch_in_epoch + 1}/{self.total}): "
                       f"{parts} | {self.images / max(elapsed, 1e-9):.1f} img/s, epoch ends in "
                       f"{format_duration(left)}", file=sys.stdout)
            sys.stdout.flush()

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def evaluate(model, bundle, opt, device, split: str, *, meteor: bool = True, max_images: int = -1,
             progress: bool = True) -> dict:
    """Decode a split with `opt`'s decoding settings and score it (CaptionEvaluator)."""
    ds = CaptionDataset(bundle, split, train=False, max_images=max_images)
    loader = make_loader(ds, opt, shuffle=False)
    raw = model.module if hasattr(model, "module") else model
    novel = bundle.novel_classes(opt)
    decoding = Decoding.from_options(opt, novel)
    evaluator = CaptionEvaluator(bundle, novel_classes=novel if opt.decode_noc else [], meteor=meteor,
                                 spice=opt.spice, split=split, dcc_annotations=opt.dcc_annotations)
    skipped = []
    with inference_mode(raw):
        for batch in tqdm(loader, desc=f"eval {split}", leave=False, disable=None if progress else True):
            skipped += batch.get("skipped", [])
            if batch.get("empty"):
                continue
            scales = [(w / opt.image_crop_size, h / opt.image_crop_size) for w, h in batch["sizes"]]
            evaluator.process(batch, decode_batch(raw, batch, decoding, bundle.vocab, device=device,
                                                  box_scales=scales))
    result = evaluator.evaluate()
    result["predictions"] = list(evaluator.preds.values())
    result["skipped_images"] = skipped
    return result


def format_table(result: dict) -> str:
    """Scores as papers print them: metrics, accuracies and F1 x 100; counts as they are. Each
    grounding accuracy shows its counts ("95.0  (19 of 20 words)"), also when it has no words."""
    grounding = result.get("grounding") or {}
    shown_counts = {c for pair in ACCURACY_COUNTS.values() for c in pair} - {"visual_words"}
    rows = [(k, v) for k, v in result["overall"].items()]
    rows += [(k, _with_count(v, grounding, k)) for k, v in grounding.items() if k not in shown_counts]
    if result.get("noc"):
        rows.append(("noc_f1", f"{result['noc']['metric']} (sets: {result['noc']['sets']})"))
    for k, v in (result.get("noc", {}).get("average") or {}).items():
        rows.append((f"noc_avg_{k}", v))
    for name, e in (result.get("noc", {}).get("per_class") or {}).items():
        rows.append((f"noc_f1_{name}", e["f1"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{'(scores x 100)':<{width}}"]
    for k, v in rows:
        if v is None:
            text = "skipped"
        elif isinstance(v, float):
            text = f"{100 * v:.1f}"
        else:
            text = str(v)
        lines.append(f"{k:<{width}}  {text}")
    return "\n".join(lines)


def _with_count(value, grounding: dict, key: str):
    """A grounding accuracy as '95.0  (19 of 20 words)', or '-  (0 of 0 words)' when it has none."""
    if key not in ACCURACY_COUNTS:
        return value
    right, of = (grounding.get(k, 0) for k in ACCURACY_COUNTS[key])
    score = f"{100 * value:.1f}" if value is not None else "-"
    return f"{score}  ({right} of {of} words)"
