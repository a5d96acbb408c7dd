"""One batch of images -> grounded captions: encode, choose the CBS constraints, search, fill the
slots. The one decode path of evaluation, the Python API, the demo and the web page.

    with inference_mode(model):
        captions = decode_batch(model, batch, Decoding.from_options(opt, held_out), vocab, device=dev)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from nbt.misc.decoding import beam_search, select_constraints
from nbt.misc.runtime import autocast, to_device
from nbt.misc.slot_filling import Caption, fill_slots


@dataclass(frozen=True)
class Decoding:
    """How to decode: the search, its constraints and the rendering of held-out classes."""
    beam_size: int = 1
    max_len: int = 20
    length_penalty: float = 0.0
    cbs: bool = False                      # constrained beam search
    cbs_mode: str = "all"                  # all | unique | novel
    cbs_tag_size: int = 3                  # constraints per image
    cbs_score_thresh: float = 0.8          # unique / novel: detections scoring at least this
    novel_classes: tuple[int, ...] = ()    # held-out classes (NOC): CBS novel mode's candidates
    render_novel: bool = False             # decode_noc: a held-out class is rendered by its name
    amp: str = "none"                      # autocast of the encoder on a GPU
    first_finished: bool = False           # beam search returns the first caption to end (the original's)

    @staticmethod
    def from_options(opt, novel_classes=(), **changes) -> "Decoding":
        values = dict(beam_size=opt.beam_size, max_len=opt.seq_length, length_penalty=opt.length_penalty,
                      cbs=opt.cbs, cbs_mode=opt.cbs_mode, cbs_tag_size=opt.cbs_tag_size,
                      cbs_score_thresh=opt.cbs_score_thresh, novel_classes=tuple(novel_classes),
                      render_novel=opt.decode_noc, amp=opt.amp, first_finished=opt.beam_first_finished)
        values.update(changes)
        return Decoding(**values)

    @property
    def name(self) -> str:
        """greedy | beam3 | beam3-first (beam_first_finished) | beam3_cbs-novel2 (results files carry it)."""
        name = "greedy" if self.beam_size == 1 and not self.cbs else f"beam{self.beam_size}"
        name += "-first" if self.first_finished and self.beam_size > 1 else ""
        return name + (f"_cbs-{self.cbs_mode}{self.cbs_tag_size}" if self.cbs else "")


@contextmanager
def inference_mode(model: torch.nn.Module):
    """Eval mode and no gradients for the block; the model's previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def decode_batch(model, batch: dict, decoding: Decoding, vocab, *, device,
                 box_scales: list[tuple[float, float]] | None = None) -> list[Caption]:
    """batch: images (B, 3, S, S) or cached features, proposals (B, R, 6) in model pixels and
    prop_mask (B, R) -> one Caption per image; box_scales (sx, sy) map its boxes to the caller's
    pixels (the image's own). Call it inside `inference_mode(model)`."""
    assert not model.training, "decode_batch needs eval mode: use inference_mode(model)"
    proposals, prop_mask = batch["proposals"].cpu(), batch["prop_mask"].cpu()
    with autocast(device, decoding.amp):
        f = model.encode(to_device(batch, device))
    f = f.float()
    constraints = None
    if decoding.cbs and getattr(model.decoder, "has_pointer", False):
        constraints = select_constraints(proposals, prop_mask, n_constraints=decoding.cbs_tag_size, mode=decoding.cbs_mode,
                                         score_thresh=decoding.cbs_score_thresh,
                                         novel_classes=list(decoding.novel_classes))
    decoded = beam_search(model.decoder, f, beam_size=decoding.beam_size, max_len=decoding.max_len,
                          constraints=constraints, length_penalty=decoding.length_penalty,
                          first_finished=decoding.first_finished)
    novel = set(decoding.novel_classes) if decoding.render_novel else set()
    return [fill_slots(d, vocab, proposals[i], novel_classes=novel,
                       box_scale=box_scales[i] if box_scales is not None else (1.0, 1.0))
            for i, d in enumerate(decoded)]
