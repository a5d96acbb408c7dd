"""Python API in the style of LAVIS / Hugging Face.

    from misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained("save/world")
    out = cap.generate(["photo.jpg"], beam_size=3)            # detector from `detector_weights`
    out = cap.generate([img], proposals=[rows], cbs=True)       # or your own proposals
    out[0]["caption"], out[0]["tagged"], out[0]["grounding"]

Proposals of an image, in this order: the caller's rows; the run's own detections (its
`proposal_h5` rows) when the image is one of its data set's (`OwnImages`); else the detector.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from misc.captioner import build_captioner
from misc.checkpoint import check_compatible, load_checkpoint
from misc.config import Options, options_from_dict
from misc.dataset import held_out_classes, load_dic
from misc.decoding import beam_search, select_constraints
from misc.evaluation import autocast
from misc.io import DataError, open_h5, read_json
from misc.slot_filling import fill_slots
from misc.transforms import load_image, resize_with_boxes, to_tensor


PIXEL_INDEX_MAX_IMAGES = 20_000     # larger data sets (COCO) are matched by path only


def pixel_key(image: Image.Image) -> str:
    """Hash of an RGB image's size and pixels: equal keys = the same picture, whatever its file."""
    return hashlib.sha1(f"{image.width}x{image.height}".encode() + image.tobytes()).hexdigest()


class OwnImages:
    """The images of a run's own data set (every split of its dic file) and their detections (the
    rows of its `proposal_h5`, written by its detector, simulated for the built-in world).

    An image is recognised by its resolved path, or, given as pixels (a PIL image, an upload), by
    `pixel_key`: that index decodes every image of the data set once, so it is built on the first
    call that needs it (not at load), and only for data sets of at most PIXEL_INDEX_MAX_IMAGES.
    Thread-safe: the web page may caption several uploads at once."""

    def __init__(self, opt: Options):
        self.opt = opt
        self._lock = threading.Lock()
        self._by_path: dict[str, int] | None = None
        self._by_pixels: dict[str, int] | None = None

    def _files(self) -> list[Path]:
        if not Path(self.opt.proposal_h5).is_file() or not Path(self.opt.input_dic).is_file():
            return []                                      # no own detections to use
        root = Path(self.opt.image_path)
        return [root / im["file_path"] for im in read_json(self.opt.input_dic)["images"]]

    def row_of_path(self, path: str | Path) -> int | None:
        with self._lock:
            if self._by_path is None:
                self._by_path = {str(p.resolve()): i for i, p in enumerate(self._files())}
        return self._by_path.get(str(Path(path).resolve()))

    def row_of_pixels(self, image: Image.Image) -> int | None:
        with self._lock:
            if self._by_pixels is None:
                self._by_pixels = self._pixel_index()
        return self._by_pixels.get(pixel_key(image))

    def _pixel_index(self) -> dict[str, int]:
        files = self._files()
        if len(files) > PIXEL_INDEX_MAX_IMAGES:
            warnings.warn(f"{self.opt.input_dic}: {len(files)} images are too many to index by pixels; "
                          "give images of the run's data set as paths to use its detections")
            return {}
        index = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                # a missing file is simply not indexed
            for i, path in enumerate(files):
                image = load_image(path) if path.is_file() else None
                if image is not None:
                    index.setdefault(pixel_key(image), i)
        return index

    def detections(self, row: int) -> np.ndarray:
        """(K, 6) rows [x1, y1, x2, y2, class, score] of data-set row `row`, original pixels."""
        with open_h5(self.opt.proposal_h5, ("dets_labels",)) as f:
            if row >= f["dets_labels"].shape[0]:
                raise DataError(f"{self.opt.proposal_h5}: no proposals row {row} "
                                f"(the file does not match {self.opt.input_dic})")
            n = int(f["nms_num"][row]) if "nms_num" in f else int(f["dets_num"][row])
            return np.asarray(f["dets_labels"][row, :n], np.float32)


class NBTCaptioner:
    def __init__(self, model, opt: Options, vocab, classes, held_out: list[int], device):
        self.model, self.opt, self.vocab, self.classes = model, opt, vocab, classes
        self.held_out, self.device = held_out, device
        self._detector = None
        self.own = OwnImages(opt)

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

    def own_proposals(self, image: str | Path | Image.Image, pil: Image.Image | None = None) -> np.ndarray | None:
        """The run's own detections of `image` when it is an image of the run's data set, else None.
        A path is matched by its resolved path, then (a copy elsewhere) by its pixels; a PIL image
        by its pixels. `pil`: the image already read, to read it only once."""
        row = self.own.row_of_path(image) if isinstance(image, (str, Path)) else None
        if row is None:
            row = self.own.row_of_pixels(pil if pil is not None else self._read(image))
        return None if row is None else self.own.detections(row)

    def proposals(self, images: list, pils: list[Image.Image] | None = None) -> list[np.ndarray]:
        """Per image (K, 6) rows in its own pixels: the run's own detections for its data set's
        images, the detector's for the others (the detector is built only if one needs it)."""
        pils = pils if pils is not None else [self._read(im) for im in images]
        out = [self.own_proposals(im, pil) for im, pil in zip(images, pils)]
        need = [i for i, rows in enumerate(out) if rows is None]
        if need:
            for i, rows in zip(need, self.detector()([pils[i] for i in need])):
                out[i] = rows
        return out

    @staticmethod
    def _read(image) -> Image.Image:
        pil = load_image(image) if isinstance(image, (str, Path)) else image.convert("RGB")
        if pil is None:
            raise DataError(f"cannot read image {image}")
        return pil

    @torch.no_grad()
    def generate(self, images: list, proposals: list | None = None, *, beam_size: int = 1,
                 cbs: bool = False, cbs_mode: str = "all", cbs_tag_size: int = 3,
                 max_len: int | None = None) -> list[dict]:
        """Captions of `images` (paths or PIL images).

        proposals: per image, (K, 6) rows [x1, y1, x2, y2, class 1..C, score] in the image's own
        pixels, or None (the whole list, or one entry) for the run's own: an image of the run's
        data set (the same file, or the same pixels) gets the detections the run was trained with,
        exactly the rows of its `proposal_h5`; only other images go to the detector
        (`detector_weights`)."""
        pils = [self._read(im) for im in images]
        proposals = list(proposals) if proposals is not None else [None] * len(images)
        if len(proposals) != len(images):
            raise DataError(f"{len(images)} images but {len(proposals)} proposal arrays")
        need = [i for i, rows in enumerate(proposals) if rows is None]
        if need:
            for i, rows in zip(need, self.proposals([images[i] for i in need], [pils[i] for i in need])):
                proposals[i] = rows
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
