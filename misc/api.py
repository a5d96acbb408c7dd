"""Python API in the style of LAVIS / Hugging Face.

    from misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained("save/world")
    out = cap.generate(["photo.jpg"], beam_size=3)            # detector from `detector_weights`
    out = cap.generate([img], proposals=[rows], cbs=True)       # or your own proposals
    out[0]["caption"], out[0]["tagged"], out[0]["grounding"]
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from misc.captioner import build_captioner
from misc.checkpoint import check_compatible, load_checkpoint
from misc.config import Options, options_from_dict
from misc.dataset import held_out_classes, load_dic
from misc.decoding import beam_search, select_constraints
from misc.evaluation import autocast
from misc.slot_filling import fill_slots
from misc.transforms import load_image, resize_with_boxes, to_tensor


class NBTCaptioner:
    def __init__(self, model, opt: Options, vocab, classes, held_out: list[int], device):
        self.model, self.opt, self.vocab, self.classes = model, opt, vocab, classes
        self.held_out, self.device = held_out, device
        self._detector = None

    @classmethod
    def from_pretrained(cls, run: str | Path, *, device: str | None = None, **overrides) -> "NBTCaptioner":
        """`run`: save/<id> (model-best.pth, else model.pth) or a .pth file. The checkpoint's own
        config names its dic / class files; `overrides` change any option."""
        ckpt = load_checkpoint(run)
        opt = options_from_dict({**ckpt["config"], **overrides, "cached_features": ""})
        opt = dataclasses.replace(opt, pretrained_cnn=False, cnn_weights="")   # weights come from ckpt
        dic, classes, vocab = load_dic(opt.input_dic, opt.class_name_file)
        check_compatible(ckpt, vocab.fingerprint(), list(classes.names), str(run))
        dev = torch.device(device or ("cuda" if opt.cuda and torch.cuda.is_available() else "cpu"))
        model = build_captioner(opt, vocab_size=vocab.size, num_classes=classes.num_classes,
                                fg_class=classes.fg_class())
        model.load_state_dict(ckpt["model"])
        model.to(dev).eval()
        return cls(model, opt, vocab, classes, held_out_classes(dic, classes), dev)

    def detector(self):
        if self._detector is None:
            from misc.detector import FasterRCNN
            self._detector = FasterRCNN(self.classes, weights=self.opt.detector_weights, device=self.device)
        return self._detector

    @torch.no_grad()
    def generate(self, images: list, proposals: list[np.ndarray] | None = None, *, beam_size: int = 1,
                 cbs: bool = False, cbs_mode: str = "all", cbs_tag_size: int = 3,
                 max_len: int | None = None) -> list[dict]:
        """images: paths or PIL images; proposals: per image (K, 6) rows in its own pixels."""
        pils = [load_image(im) if isinstance(im, (str, Path)) else im.convert("RGB") for im in images]
        bad = [str(im) for im, p in zip(images, pils) if p is None]
        if bad:
            raise ValueError(f"cannot read image {bad[0]}")
        if proposals is None:
            proposals = self.detector()(pils)
        size = self.opt.image_crop_size
        tensors, props, scales = [], [], []
        for im, rows in zip(pils, proposals):
            rows = np.asarray(rows, np.float32).reshape(-1, 6)[: self.opt.max_proposal]
            resized, scaled = resize_with_boxes(im, size, rows)
            tensors.append(to_tensor(resized))
            props.append(torch.from_numpy(scaled))
            scales.append((im.width / size, im.height / size))
        R = max(1, max(len(p) for p in props))
        prop = torch.zeros(len(pils), R, 6)
        mask = torch.zeros(len(pils), R, dtype=torch.bool)
        for i, p in enumerate(props):
            prop[i, :len(p)], mask[i, :len(p)] = p, True
        batch = {"images": torch.stack(tensors).to(self.device), "proposals": prop.to(self.device),
                 "prop_mask": mask.to(self.device)}
        with autocast(self.device, self.opt):
            f = self.model.encode(batch)
        f = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in f.items()}
        constraints = None
        if cbs and getattr(self.model.decoder, "has_pointer", False):
            constraints = select_constraints(prop, mask, k=cbs_tag_size, mode=cbs_mode,
                                             score_thresh=self.opt.cbs_score_thresh, novel_classes=self.held_out)
        decoded = beam_search(self.model.decoder, f, beam_size=beam_size, max_len=max_len or self.opt.seq_length,
                              constraints=constraints, length_penalty=self.opt.length_penalty)
        novel = set(self.held_out) if self.opt.decode_noc else set()
        out = []
        for i, d in enumerate(decoded):
            cap = fill_slots(d, self.vocab, prop[i].cpu(), novel_classes=novel, box_scale=scales[i]).to_dict()
            rows = prop[i][mask[i]].cpu().numpy()
            cap["proposals"] = [{"box": [round(float(v) * s, 2) for v, s in zip(r[:4], scales[i] * 2)],
                                 "class": self.classes.names[int(r[4]) - 1], "score": round(float(r[5]), 4)}
                                for r in rows]
            out.append(cap)
        return out
