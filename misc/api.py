"""Python API in the style of LAVIS / Hugging Face: a trained run captions images.

    from nbt.misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained("save/world")
    [r] = cap.generate(["photo.jpg"], beam_size=3)                 # a CaptionResult per image
    r.caption, r.tagged, r.grounding, r.proposals, r.score         # r.to_dict() for JSON
    cap.generate([pil_image], proposals=[rows], cbs=True)          # or your own proposals

Images: paths, open binary files / bytes (uploads), PIL images or (H, W, 3) uint8 arrays; EXIF
orientation is applied, any mode becomes RGB (misc/transforms.to_rgb).

Proposals of an image, first that applies:
  1. the caller's rows (K, 6) [x1, y1, x2, y2, class 1..C, score] in the image's own pixels,
     checked by misc/proposals.validate_proposals: a bad row is an error naming image and row;
  2. the run's own detections (the rows of its `proposal_h5`) when the image is one of its data
     set's (`OwnImages`: the same file, or the same pixels): exactly what the demo and the web
     page use, and what the run was trained and evaluated with;
  3. the detector (`detector_weights`, torchvision Faster R-CNN), built only when an image needs it.
Boxes in results are in the image's original pixels.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nbt.misc.calibration import resolve_score_thresholds
from nbt.misc.captioner import build_captioner
from nbt.misc.checkpoint import check_compatible, checkpoint_vocabulary, load_checkpoint
from nbt.misc.config import Options, options_from_dict
from nbt.misc.dataset import held_out_classes, load_dic
from nbt.misc.inference import Decoding, decode_batch, inference_mode
from nbt.misc.io import DataError, read_json
from nbt.misc.proposals import validate_proposals
from nbt.misc.transforms import load_image, open_image, resize_with_boxes, to_rgb, to_tensor

PIXEL_INDEX_MAX_IMAGES = 20_000     # larger data sets (COCO) are matched by path only
CBS_MODES = ("all", "unique", "novel")
MAX_CBS_TAGS = 8                    # constrained beam search keeps 2 ** k beam groups per image


def _field(name: str, doc: str) -> property:
    return property(lambda self: self[name], doc=doc)


class CaptionResult(dict):
    """The caption of one image: a dict of JSON values (json.dumps(result) works; result["tagged"]
    as in earlier versions) with typed read-only attributes. Boxes are [x1, y1, x2, y2] in the
    image's original pixels.

    caption    "two red rings next to a blue tile" (a Chinese run: "两个红色的圆环在一个蓝色的方块的左边")
    tagged     "two red [rings] next to a blue [tile]": visual words in brackets ("两个红色的[圆环]...")
    grounding  one dict per visual word: {word, position (token index), region (index into
               proposals), class, box, score (the proposal's), plural (0 / 1: the number the
               caption states, by the word's form in English, by its numeral / measure word in Chinese)}
    proposals  every region the model saw: {box, class, score}, highest score first
    score      the beam's log-probability
    width, height   the image's size (the frame of every box)
    source     where the proposals came from: "caller", "run" (its own detections) or "detector"
    """
    FIELDS = ("caption", "tagged", "grounding", "proposals", "score", "width", "height", "source")

    def __init__(self, *, caption: str, tagged: str, grounding: list[dict], proposals: list[dict],
                 score: float, width: int, height: int, source: str):
        super().__init__(caption=caption, tagged=tagged, grounding=grounding, proposals=proposals,
                         score=score, width=width, height=height, source=source)

    caption: str = _field("caption", "the caption")
    tagged: str = _field("tagged", "the caption with [visual words]")
    grounding: list = _field("grounding", "per visual word: word, position, region, class, box, score, plural")
    proposals: list = _field("proposals", "the regions the model saw: box, class, score")
    score: float = _field("score", "the beam's log-probability")
    width: int = _field("width", "image width in pixels")
    height: int = _field("height", "image height in pixels")
    source: str = _field("source", "caller | run | detector")

    def to_dict(self) -> dict:
        return dict(self)


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

    def __init__(self, opt: Options, num_classes: int):
        self.opt, self.num_classes = opt, num_classes
        self._lock = threading.Lock()
        self._by_path: dict[str, int] | None = None
        self._ids: list[int] = []
        self._by_pixels: dict[str, int] | None = None

    def _files(self, need_detections: bool = True) -> list[Path]:
        if need_detections and not Path(self.opt.proposal_h5).is_file() or not Path(self.opt.input_dic).is_file():
            return []                                      # no own detections to use
        root = Path(self.opt.image_path)
        images = read_json(self.opt.input_dic)["images"]
        self._ids = [int(im["id"]) for im in images]
        return [root / im["file_path"] for im in images]

    def row_of_path(self, path: str | Path, need_detections: bool = True) -> int | None:
        """The data-set row of an image file; with need_detections, only when the run has its
        detection h5 (else there is nothing of its own to use for the image)."""
        if need_detections and not Path(self.opt.proposal_h5).is_file():
            return None
        with self._lock:
            if self._by_path is None:
                self._by_path = {str(p.resolve()): i for i, p in enumerate(self._files(need_detections=False))}
        return self._by_path.get(str(Path(path).resolve()))

    def image_id(self, row: int) -> int:
        """The image id of a row found by row_of_path."""
        return self._ids[row]

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
        """(K, 6) valid rows [x1, y1, x2, y2, class, score] of data-set row `row`, original pixels
        (the h5 checked against the dic, as the loader checks it)."""
        from nbt.misc.detector import ProposalReader
        images = read_json(self.opt.input_dic)["images"]
        reader = ProposalReader(self.opt.proposal_h5, [int(im["id"]) for im in images], self.num_classes)
        try:
            return reader.rows(row)
        finally:
            reader.close()


def read_image(image, where: str) -> Image.Image:
    """A path, binary file, bytes, PIL image or uint8 array -> upright RGB; DataError if unreadable."""
    if isinstance(image, (bytes, bytearray)):
        image = io.BytesIO(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise DataError(f"{where}: an array image must be uint8 (H, W), (H, W, 3) or (H, W, 4), "
                            f"got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        try:
            return to_rgb(image)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    if isinstance(image, (str, Path)) or hasattr(image, "read"):
        try:
            return open_image(image)
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    raise DataError(f"{where}: expected a path, bytes, a PIL image or a uint8 array, got {type(image).__name__}")


def image_name(image, i: int) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"image {i}"


class NBTCaptioner:
    """A trained run, ready to caption: `from_pretrained(run)`, then `generate(images)`."""

    def __init__(self, model, opt: Options, vocab, classes, held_out: list[int], device):
        self.model, self.opt, self.vocab, self.classes = model, opt, vocab, classes
        self.held_out, self.device = held_out, device
        self.own = OwnImages(opt, classes.num_classes)
        self._boxes = None
        self._detector = None
        self._detector_error: DataError | None = None

    @classmethod
    def from_pretrained(cls, run: str | Path, *, device: str | None = None, **overrides) -> "NBTCaptioner":
        """`run`: save/<id> (model-best.pth, else model.pth) or a .pth file, or a folder of the original
        NeuralBabyTalk (model-best.pth + infos_<id>-best.pkl: converted on load). The checkpoint's own
        config names its dic / class / detection files (a converted one carries its vocabulary and
        classes); `overrides` change any option, e.g.
        `detector_weights="frcnn.pth"` (the detector for images outside the run's data set).
        `device`: "cpu", "cuda", ... (default: the GPU when there is one and the run's `cuda`)."""
        ckpt = load_checkpoint(run)
        opt = options_from_dict({**ckpt["config"], **overrides, "cached_features": ""})
        opt = dataclasses.replace(opt, pretrained_cnn=False, cnn_weights="")   # weights come from ckpt
        dic, classes, vocab = checkpoint_vocabulary(ckpt) or load_dic(opt.input_dic, opt.class_name_file, opt.language)
        check_compatible(ckpt, vocab.fingerprint(), list(classes.names), str(run))
        dev = torch.device(device or ("cuda" if opt.cuda and torch.cuda.is_available() else "cpu"))
        model = build_captioner(opt, vocab_size=vocab.size, num_classes=classes.num_classes,
                                fine_class=classes.fine_class())
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise DataError(f"{run}: the checkpoint's weights do not fit the model its config describes "
                            f"({str(err).splitlines()[-1].strip()[:200]})") from None
        model.to(dev).eval()
        held_out = held_out_classes(dic, classes, noc=opt.decode_noc or opt.cbs_mode == "novel",
                                    source=opt.input_dic)
        return cls(model, opt, vocab, classes, held_out, dev)

    def detector(self):
        """The Faster R-CNN for images outside the run's data set, built on first use; a failure
        (no weights offline, no class in common) is remembered and raised again, not retried."""
        if self._detector is None and self._detector_error is None:
            from nbt.misc.detector import FasterRCNN
            try:
                self._detector = FasterRCNN(self.classes, weights=self.opt.detector_weights, device=self.device)
            except DataError as err:
                self._detector_error = err
        if self._detector_error is not None:
            raise DataError(str(self._detector_error))
        return self._detector

    def ground_truth(self, path: str | Path) -> np.ndarray | None:
        """(G, 6) rows [x1, y1, x2, y2, class, 1.0] of the GT boxes of an image of the run's data
        set (found by its resolved path; the paper's oracle proposals, det_oracle), or None for
        an image outside it. The run's instance files are read once (their npz cache)."""
        row = self.own.row_of_path(path, need_detections=False)
        if row is None:
            return None
        if self._boxes is None:
            from nbt.misc.annotations import BoxIndex
            from nbt.misc.npz_cache import cache_path
            if not self.opt.instances_json:
                raise DataError("det_oracle needs the run's GT boxes, and its config names no instances_json")
            self._boxes = BoxIndex.load(self.opt.instances_json, self.classes, cache_path(self.opt.input_dic, "boxes"))
        boxes, cls = self._boxes.get(self.own.image_id(row))[:2]
        return np.concatenate([boxes, cls[:, None], np.ones((len(cls), 1))], 1).astype(np.float32)

    def own_proposals(self, image, pil: Image.Image | None = None) -> np.ndarray | None:
        """The run's own detections of `image` when it is an image of the run's data set, else None.
        A path is matched by its resolved path, then (a copy elsewhere) by its pixels; any other
        image by its pixels. `pil`: the image already read, to read it only once."""
        row = self.own.row_of_path(image) if isinstance(image, (str, Path)) else None
        if row is None:
            row = self.own.row_of_pixels(pil if pil is not None else read_image(image, image_name(image, 0)))
        return None if row is None else self.own.detections(row)

    def proposals(self, images: list, pils: list[Image.Image] | None = None,
                  names: list[str] | None = None) -> list[tuple[np.ndarray, str]]:
        """Per image ((K, 6) rows in its own pixels, source): the run's own detections for its data
        set's images ("run"), the detector's for the others ("detector"). Rows that fail
        validate_proposals are dropped with a warning (they come from files and models, not from
        the caller). DataError, naming the image, when an image needs the detector and there is none."""
        names = names or [image_name(im, i) for i, im in enumerate(images)]
        pils = pils if pils is not None else [read_image(im, name) for im, name in zip(images, names)]
        out: list = [self.own_proposals(im, pil) for im, pil in zip(images, pils)]
        out = [None if rows is None else (rows, "run") for rows in out]
        need = [i for i, found in enumerate(out) if found is None]
        if need:
            try:
                detector = self.detector()
            except DataError as err:
                raise DataError(f"{names[need[0]]} is not an image of this run's data set, "
                                f"and there is no detector for it: {err}") from None
            for i, rows in zip(need, detector([pils[i] for i in need])):
                out[i] = (rows, "detector")
        for i, (rows, source) in enumerate(out):
            clean, problems = validate_proposals(rows, pils[i].width, pils[i].height, self.classes.num_classes)
            if problems:
                warnings.warn(f"{names[i]}: dropped {len(problems)} unusable proposal rows "
                              f"of the {source} (first: {problems[0]})")
            out[i] = (clean, source)
        return out

    def _check_args(self, beam_size, cbs_mode, cbs_tag_size, max_len, batch_size) -> None:
        for name, value, low, high in (("beam_size", beam_size, 1, 100), ("cbs_tag_size", cbs_tag_size, 1, MAX_CBS_TAGS),
                                       ("max_len", max_len, 1, 1000), ("batch_size", batch_size, 1, 10_000)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
        if cbs_mode not in CBS_MODES:
            raise ValueError(f"cbs_mode must be one of {', '.join(CBS_MODES)}, got {cbs_mode!r}")

    @torch.no_grad()
    def generate(self, images: list, proposals: list | None = None, *, beam_size: int = 1,
                 cbs: bool = False, cbs_mode: str = "all", cbs_tag_size: int = 3,
                 max_len: int | None = None, batch_size: int = 8) -> list[CaptionResult]:
        """Caption `images` (paths, bytes / binary files, PIL images or uint8 arrays).

        proposals: per image, (K, 6) rows [x1, y1, x2, y2, class 1..C, score] in the image's own
        pixels (class: the line of the run's class-name file), or None (the whole list, or one
        entry) to use the run's own detections for images of its data set (the same file, or
        the same pixels: exactly the rows of its `proposal_h5`) and the detector
        (`from_pretrained(run, detector_weights=PATH)`) for the others. A caller's row that is
        not finite, has x1 > x2 or y1 > y2, an unknown class or not 6 values is a DataError naming
        the image and the row; boxes are clipped to the image. At most `max_proposal` rows (the
        highest scores) per image are used.
        cbs: constrained beam search (cbs_mode all / unique / novel, cbs_tag_size regions).

        Returns one CaptionResult per image, in order; boxes in the image's original pixels
        (the values below show the format; a trained world run writes captions like this one):

        >>> [r] = cap.generate(["data/world/images/world/world_000042.png"], beam_size=3)
        >>> r.tagged
        'two red [rings] next to a blue [tile]'
        >>> r.grounding[0]
        {'word': 'rings', 'position': 2, 'region': 0, 'class': 'circle',
         'box': [12.0, 30.5, 41.0, 60.0], 'score': 0.97, 'plural': 1}
        >>> r.to_dict().keys()
        dict_keys(['caption', 'tagged', 'grounding', 'proposals', 'score', 'width', 'height', 'source'])

        Raises DataError (one line) for an unreadable image, bad proposal rows, or an image outside
        the run's data set when there is no detector; ValueError for bad arguments."""
        max_len = self.opt.seq_length if max_len is None else max_len
        self._check_args(beam_size, cbs_mode, cbs_tag_size, max_len, batch_size)
        if isinstance(images, (str, Path, bytes, Image.Image, np.ndarray)):
            raise ValueError("images must be a list (of paths, bytes, PIL images or arrays)")
        images = list(images)
        proposals = [None] * len(images) if proposals is None else list(proposals)
        if len(proposals) != len(images):
            raise ValueError(f"{len(images)} images but {len(proposals)} proposal arrays")
        out = []
        for start in range(0, len(images), batch_size):
            ims = images[start:start + batch_size]
            names = [image_name(im, start + j) for j, im in enumerate(ims)]
            pils = [read_image(im, name) for im, name in zip(ims, names)]
            rows = self._resolve(ims, pils, names, proposals[start:start + batch_size])
            out += self._caption(pils, rows, beam_size=beam_size, cbs=cbs, cbs_mode=cbs_mode,
                                 cbs_tag_size=cbs_tag_size, max_len=max_len)
        return out

    def _resolve(self, images, pils, names, given) -> list[tuple[np.ndarray, str]]:
        """The caller's rows (validated strictly), else own detections / detector."""
        out: list = [None] * len(images)
        for i, rows in enumerate(given):
            if rows is None:
                continue
            clean, problems = validate_proposals(rows, pils[i].width, pils[i].height, self.classes.num_classes)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise DataError(f"{names[i]}: proposals {problems[0]}{more}")
            out[i] = (clean, "caller")
        need = [i for i, found in enumerate(out) if found is None]
        if need:
            looked_up = self.proposals([images[i] for i in need], [pils[i] for i in need], [names[i] for i in need])
            for i, found in zip(need, looked_up):
                out[i] = found
        return out

    def _caption(self, pils, rows, *, beam_size, cbs, cbs_mode, cbs_tag_size, max_len) -> list[CaptionResult]:
        size = self.opt.image_crop_size
        tensors, props, scales = [], [], []
        for im, (r, _) in zip(pils, rows):
            r = r[np.argsort(-r[:, 5], kind="stable")][: self.opt.max_proposal]
            resized, scaled = resize_with_boxes(im, size, r)
            tensors.append(to_tensor(resized))                              # (3, S, S)
            props.append(torch.from_numpy(scaled))                          # (K, 6) in model pixels
            scales.append((im.width / size, im.height / size))
        R = max(1, max(len(p) for p in props))
        prop = torch.zeros(len(pils), R, 6)                                 # (B, R, 6)
        mask = torch.zeros(len(pils), R, dtype=torch.bool)                  # (B, R)
        for i, p in enumerate(props):
            prop[i, :len(p)], mask[i, :len(p)] = p, True
        batch = {"images": torch.stack(tensors), "proposals": prop, "prop_mask": mask}
        if cbs and self.opt.cbs_score_thresh < 0:                # a run that could not calibrate it
            self.opt = resolve_score_thresholds(self.opt, keys=("cbs_score_thresh",))
        decoding = Decoding.from_options(self.opt, self.held_out, beam_size=beam_size, max_len=max_len, cbs=cbs,
                                         cbs_mode=cbs_mode, cbs_tag_size=cbs_tag_size)
        with inference_mode(self.model):
            captions = decode_batch(self.model, batch, decoding, self.vocab, device=self.device, box_scales=scales)
        out = []
        for i, cap in enumerate(captions):
            sx, sy = scales[i]
            seen = [{"box": [round(float(v) * s, 2) for v, s in zip(r[:4], (sx, sy, sx, sy))],
                     "class": self.classes.names[int(r[4]) - 1], "score": round(float(r[5]), 4)}
                    for r in prop[i][mask[i]].numpy()]
            out.append(CaptionResult(caption=cap.text, tagged=cap.tagged, grounding=cap.grounding, proposals=seen,
                                     score=float(cap.score), width=pils[i].width, height=pils[i].height,
                                     source=rows[i][1]))
        return out
