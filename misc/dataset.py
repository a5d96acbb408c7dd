"""Images + proposals + GT boxes + captions -> batches with per-token grounding targets.

Per caption token (reference §1.3, with the original's defects fixed):
  words  word id (0 = EOS / padding) ;  vis_cls  class 1..C of a visual word, else 0
  plural 1 plural / 0 singular       ;  fg       fine-grained index, -1 for textual tokens
  pos    (R,) positive proposals: IoU > pos_iou_thresh with a GT box of the word's class,
         detection score >= pos_score_thresh, detected class == the word's class.
A visual word without a positive proposal falls back to its textual words (all of them: the
original kept only the first word of a bigram).

Randomness (crop, caption choice) is drawn from (seed, epoch, index), so a run is reproducible
whatever the number of workers, and a resumed run sees the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from misc.annotations import BoxIndex
from misc.config import Options
from misc.detector import ProposalReader, check_proposal_h5
from misc.io import DataError, read_json
from misc.transforms import box_area, box_iou, crop_with_boxes, load_image, resize_with_boxes, to_tensor
from misc.vocab import ClassNames, VisualWordMatcher, Vocabulary


@dataclass
class DataBundle:
    """Everything read once from disk and shared by all splits (and, forked, by all workers)."""
    opt: Options
    dic: dict
    captions: list              # image row -> list of token lists
    classes: ClassNames
    vocab: Vocabulary
    boxes: BoxIndex
    matcher: VisualWordMatcher

    @staticmethod
    def load(opt: Options) -> "DataBundle":
        dic, classes, vocab = load_dic(opt.input_dic, opt.class_name_file)
        caps = read_json(opt.input_json)
        if not isinstance(caps, list) or len(caps) != len(dic["images"]):
            raise DataError(f"{opt.input_json}: expected a list of {len(dic['images'])} caption lists")
        if opt.proposal_h5 and not opt.det_oracle and Path(opt.proposal_h5).is_file():
            check_proposal_h5(opt.proposal_h5, [int(im["id"]) for im in dic["images"]], classes.num_classes)
        boxes = BoxIndex.from_files(opt.instances_json, classes) if opt.instances_json else \
            BoxIndex(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros((0, 4), np.float32),
                     np.zeros(0, np.int64), np.zeros(0, np.int64), {})
        return DataBundle(opt, dic, caps, classes, vocab, boxes, VisualWordMatcher(classes))

    def rows(self, split: str) -> list[int]:
        return [i for i, im in enumerate(self.dic["images"]) if im["split"] == split]

    @property
    def held_out(self) -> list[int]:
        return held_out_classes(self.dic, self.classes)


def load_dic(dic_path: str, class_name_file: str) -> tuple[dict, ClassNames, Vocabulary]:
    """A dic_*.json with its class-name file -> (dic, classes, vocabulary)."""
    dic = read_json(dic_path)
    for key in ("ix_to_word", "images"):
        if key not in dic:
            raise DataError(f"{dic_path}: missing key '{key}' (not a dic_*.json)")
    classes = ClassNames.read(class_name_file)
    if "classes" in dic and list(dic["classes"]) != list(classes.names):
        raise DataError(f"{class_name_file} does not match the classes of {dic_path}")
    return dic, classes, Vocabulary(dic["ix_to_word"], classes, dic.get("plural_of"))


def held_out_classes(dic: dict, classes: ClassNames) -> list[int]:
    names = dic.get("held_out") or []
    return [classes.names.index(n) + 1 for n in names if n in classes.names]


class CaptionDataset(Dataset):
    def __init__(self, bundle: DataBundle, split: str, *, train: bool, max_images: int = -1,
                 visual_slots: bool | None = None):
        self.b = bundle
        self.opt = bundle.opt
        self.train = train
        self.rows = bundle.rows(split)
        if max_images > 0:
            self.rows = self.rows[:max_images]
        if not self.rows:
            raise DataError(f"{self.opt.input_dic}: split '{split}' has no images")
        self._h5 = None
        self._feats = None
        # only NBT has visual slots; the baselines read every caption as plain words
        self.visual_slots = self.opt.att_model == "topdown" if visual_slots is None else visual_slots

    def __len__(self) -> int:
        return len(self.rows)

    # -- per-worker file handles (opened once per process, never per item) ----------------
    def _proposals(self, row: int) -> np.ndarray:
        images = self.b.dic["images"]
        if self._h5 is None:       # checked against the dic by DataBundle.load, which warned of bad rows
            self._h5 = ProposalReader(self.opt.proposal_h5, [int(im["id"]) for im in images],
                                      self.b.classes.num_classes, warn=False)
        dets = self._h5.rows(row, self.b.boxes.sizes.get(int(images[row]["id"])))
        return dets[box_area(dets) > 0] if len(dets) else dets

    def _cached_feature(self, row: int) -> torch.Tensor:
        if self._feats is None:
            from misc.features import FeatureCache
            self._feats = FeatureCache(self.opt.cached_features)
        return self._feats.get(row)

    # -- one image ---------------------------------------------------------------------------
    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        row = self.rows[index]
        info = self.b.dic["images"][row]
        image_id = int(info["id"])
        rng = np.random.default_rng([self.opt.seed, epoch, index])
        gt_boxes, gt_cls, gt_fine, gt_group = self.b.boxes.get(image_id)
        dets = self._proposals(row) if not self.opt.det_oracle else \
            np.concatenate([gt_boxes, gt_cls[:, None], np.ones((len(gt_cls), 1))], 1).astype(np.float32)
        crop = self.opt.image_crop_size
        if self.opt.cached_features:
            feat = self._cached_feature(row)
            w, h = self.b.boxes.sizes.get(image_id) or self._cached_size(row)
            sx, sy = crop / w, crop / h
            gt = gt_boxes * np.array([sx, sy, sx, sy], np.float32)
            props = dets.copy()
            props[:, :4] *= np.array([sx, sy, sx, sy], np.float32)
            image = feat
        else:
            path = Path(self.opt.image_path) / info["file_path"]
            img = load_image(path)
            if img is None:
                return {"skipped": str(path)}
            if self.train:
                img, gt, props = resize_with_boxes(img, self.opt.image_size, gt_boxes, dets)
                x0, y0 = rng.integers(0, self.opt.image_size - crop + 1, size=2)
                img, gt, props = crop_with_boxes(img, int(x0), int(y0), crop, gt, props)
            else:
                img, gt, props = resize_with_boxes(img, crop, gt_boxes, dets)
            image = to_tensor(img)
        keep_gt = box_area(gt) > 0
        gt, gt_cls, gt_fine, gt_group = gt[keep_gt], gt_cls[keep_gt], gt_fine[keep_gt], gt_group[keep_gt]
        keep_p = box_area(props) > 0
        props = props[keep_p][: self.opt.max_proposal]
        targets = self.encode_captions(row, props, gt, gt_cls, rng, gt_fine, gt_group)
        return {"image": image, "proposals": torch.from_numpy(props), "gt": torch.from_numpy(
            np.concatenate([gt, gt_cls[:, None], gt_fine[:, None], gt_group[:, None]], 1).astype(np.float32)),
                "image_id": image_id, "row": row, **targets}

    def _cached_size(self, row):
        return self._feats.size(row)

    def encode_captions(self, row, props, gt, gt_cls, rng, gt_fine=None, gt_group=None) -> dict:
        opt, vocab = self.opt, self.b.vocab
        caps = [c for c in self.b.captions[row] if c] or [[]]
        S, L, R = opt.seq_per_img, opt.seq_length, len(props)
        if len(caps) >= S:
            chosen = rng.choice(len(caps), S, replace=False) if self.train else np.arange(S)
        else:      # fewer captions than seq_per_img: repeat (the original's randint was off by one)
            chosen = np.concatenate([np.arange(len(caps)), rng.choice(len(caps), S - len(caps))])
        present = set(int(c) for c in gt_cls)
        iou = box_iou(props[:, :4], gt) if R else np.zeros((0, len(gt)), np.float32)
        det_cls = props[:, 4].astype(np.int64) if R else np.zeros(0, np.int64)
        score_ok = props[:, 5] >= opt.pos_score_thresh if R else np.zeros(0, bool)
        gt_fine = np.full(len(gt_cls), -1) if gt_fine is None else gt_fine

        attr_words = self.b.boxes.attribute_words
        group_words = self.b.boxes.group_words

        def positives(c: int, fine: int, adjectives: set[str]) -> np.ndarray:
            """Proposals of class c over a GT box of class c; when the GT knows fine-grained kinds
            (the built-in world) and the word names one, only boxes of that kind; when the GT
            boxes carry attributes and the phrase names some ("two red rings"), only boxes with
            them - otherwise a pointer is taught that any ring will do for "red rings"."""
            boxes = gt_cls == c
            if (gt_fine[boxes] == fine).any():
                boxes = boxes & (gt_fine == fine)
            if adjectives and gt_group is not None:
                has = np.array([g >= 0 and adjectives <= group_words[g] for g in gt_group], bool)
                if (boxes & has).any():
                    boxes = boxes & has
            hit = (iou[:, boxes] > opt.pos_iou_thresh).any(1) if R else np.zeros(0, bool)
            return hit & score_ok & (det_cls == c)
        words = np.zeros((S, L), np.int64)
        vis = np.zeros((S, L), np.int64)
        plural = np.zeros((S, L), np.int64)
        fg = np.full((S, L), -1, np.int64)
        pos = np.zeros((S, L, R), bool)
        n_visual = n_grounded = 0
        for s, k in enumerate(chosen):
            tokens = caps[int(k)]
            visual = {v.pos: v for v in self.b.matcher.match(tokens, present)} if self.visual_slots else {}
            t = i = 0
            while i < len(tokens) and t < L:
                v = visual.get(i)
                if v is not None:
                    n_visual += 1
                    adjectives, j = set(), i - 1
                    while j >= 0 and tokens[j] in attr_words:               # "two red [rings]"
                        adjectives.add(tokens[j])
                        j -= 1
                    mask = positives(v.cls, v.fg, adjectives)
                    if mask.any():
                        n_grounded += 1
                        words[s, t] = vocab.encode(tokens[i + v.length - 1])   # fallback / reference
                        vis[s, t], plural[s, t], fg[s, t] = v.cls, v.plural, v.fg
                        pos[s, t] = mask
                        t += 1
                        i += v.length
                        continue
                words[s, t] = vocab.encode(tokens[i])
                t += 1
                i += 1
        return {"words": torch.from_numpy(words), "vis_cls": torch.from_numpy(vis),
                "plural": torch.from_numpy(plural), "fg": torch.from_numpy(fg),
                "pos": torch.from_numpy(pos), "n_visual": n_visual, "n_grounded": n_grounded}


def collate(items: list[dict]) -> dict:
    """Pad proposals / GT to the batch maximum; unreadable images are dropped and listed."""
    skipped = [it["skipped"] for it in items if "skipped" in it]
    items = [it for it in items if "skipped" not in it]
    if not items:
        return {"skipped": skipped, "empty": True}
    B = len(items)
    R = max(1, max(len(it["proposals"]) for it in items))
    G = max(1, max(len(it["gt"]) for it in items))
    S, L = items[0]["words"].shape
    props = torch.zeros(B, R, 6)
    prop_mask = torch.zeros(B, R, dtype=torch.bool)
    gt = torch.zeros(B, G, 7)
    gt_mask = torch.zeros(B, G, dtype=torch.bool)
    pos = torch.zeros(B, S, L, R, dtype=torch.bool)
    for b, it in enumerate(items):
        r, g = len(it["proposals"]), len(it["gt"])
        props[b, :r], prop_mask[b, :r] = it["proposals"], True
        gt[b, :g], gt_mask[b, :g] = it["gt"], True
        pos[b, :, :, :r] = it["pos"]
    return {
        "images": torch.stack([it["image"] for it in items]),        # (B, 3, H, W) or (B, D, h, w)
        "proposals": props, "prop_mask": prop_mask,                   # (B, R, 6), (B, R)
        "gt": gt, "gt_mask": gt_mask,                                 # (B, G, 7) x1 y1 x2 y2 cls fine group
        "words": torch.stack([it["words"] for it in items]),          # (B, S, L)
        "vis_cls": torch.stack([it["vis_cls"] for it in items]),
        "plural": torch.stack([it["plural"] for it in items]),
        "fg": torch.stack([it["fg"] for it in items]),
        "pos": pos,                                                   # (B, S, L, R)
        "image_ids": [it["image_id"] for it in items], "rows": [it["row"] for it in items],
        "n_visual": sum(it["n_visual"] for it in items),
        "n_grounded": sum(it["n_grounded"] for it in items),
        "skipped": skipped,
    }


class EpochBatchSampler(Sampler):
    """Seeded batches: a fresh permutation every epoch (the original never shuffled), keeps the
    last partial batch, can start mid-epoch (resume) and can hand each DDP rank its share."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, epoch: int = 0,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch, self.start_batch, self.rank, self.world_size = epoch, start_batch, rank, world_size

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __len__(self) -> int:
        total = (self.n + self.batch_size * self.world_size - 1) // (self.batch_size * self.world_size)
        return max(0, total - self.start_batch)

    def __iter__(self):
        order = self._order()
        step = self.batch_size * self.world_size
        for k, s in enumerate(range(0, self.n, step)):
            if k < self.start_batch:
                continue
            global_batch = order[s:s + step]
            mine = global_batch[self.rank::self.world_size]
            if mine:
                yield [(i, self.epoch) for i in mine]
