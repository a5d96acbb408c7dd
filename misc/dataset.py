"""Images + proposals + GT boxes + captions -> batches with per-token grounding targets.

Per caption token: words, vis_cls, plural, fine, and the pointer's positive proposals pos (the
original's targets, with its defects fixed: misc/targets.py says which proposals are positives).

Randomness (crop, caption choice) is drawn from (seed, epoch, index), so a run is reproducible
whatever the number of workers, and a resumed run sees the same batches.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from nbt.misc.annotations import BoxIndex
from nbt.misc.calibration import resolve_score_thresholds
from nbt.misc.captions import CaptionStore, ImageTable, load_captions
from nbt.misc.config import POINTER_DECODERS, Options
from nbt.misc.dcc import dcc_class_names
from nbt.misc.detector import ProposalReader, check_proposal_h5
from nbt.misc.io import DataError, read_json
from nbt.misc.npz_cache import cache_path, digest, file_stamp
from nbt.misc.targets import CaptionTargets, PointerPositives
from nbt.misc.transforms import box_area, crop_with_boxes, load_image, resize_with_boxes, to_tensor
from nbt.misc.language import Language, language_for
from nbt.misc.vocab import ClassNames, VisualWordMatcher, Vocabulary


@dataclass
class DataBundle:
    """Everything read once from disk and shared by all splits (and, forked, by all workers):
    image records, captions and boxes as numpy arrays (misc/captions.py, misc/annotations.py),
    cached next to the dic so a second start reads neither the caption nor the instances json."""
    opt: Options
    dic: dict                   # the dic json; dic["images"] is an ImageTable
    captions: CaptionStore      # image row -> token lists (and their visual words)
    classes: ClassNames
    vocab: Vocabulary
    boxes: BoxIndex
    matcher: VisualWordMatcher      # the language's matcher (misc/language.py)

    @staticmethod
    def load(opt: Options) -> "DataBundle":
        dic, classes, vocab = load_dic(opt.input_dic, opt.class_name_file, opt.language)
        images = dic["images"] = ImageTable.from_records(dic["images"], opt.input_dic)
        if opt.proposal_h5 and not opt.det_oracle and Path(opt.proposal_h5).is_file():
            check_proposal_h5(opt.proposal_h5, images.ids.tolist(), classes.num_classes)
        boxes = BoxIndex.load(opt.instances_json, classes, cache_path(opt.input_dic, "boxes")) \
            if opt.instances_json else BoxIndex.empty()
        matcher = vocab.language.matcher
        key = {"dic": file_stamp(opt.input_dic), "classes": digest([classes.names, classes.words]),
               "boxes": BoxIndex.cache_key(opt.instances_json, classes) if opt.instances_json else ""}
        captions = load_captions(opt.input_json, images, boxes.present_classes, matcher,
                                 cache=cache_path(opt.input_dic, "captions"), key_parts=key,
                                 entity_code=boxes.entity_code)
        captions.bind_vocab(vocab.encode)
        bundle = DataBundle(opt, dic, captions, classes, vocab, boxes, matcher)
        bundle.opt = resolve_score_thresholds(opt, bundle)     # the detector's own thresholds
        return bundle

    def rows(self, split: str) -> list[int]:
        return self.dic["images"].rows(split).tolist()

    @property
    def held_out(self) -> list[int]:
        return held_out_classes(self.dic, self.classes)

    def novel_classes(self, opt: Options) -> list[int]:
        """The held-out classes a NOC run (decode_noc, or CBS in novel mode) evaluates and constrains."""
        return held_out_classes(self.dic, self.classes, noc=opt.decode_noc or opt.cbs_mode == "novel",
                                source=opt.input_dic)

    @property
    def language(self) -> Language:
        return self.vocab.language


def load_dic(dic_path: str, class_name_file: str, language: str = "") -> tuple[dict, ClassNames, Vocabulary]:
    """A dic_*.json with its class-name file -> (dic, classes, vocabulary); the vocabulary carries
    the dic's caption language (its `language` key; English when absent), which `language`, when
    given (the option), must match."""
    dic = read_json(dic_path)
    for key in ("ix_to_word", "images"):
        if key not in dic:
            raise DataError(f"{dic_path}: missing key '{key}' (not a dic_*.json)")
    classes = ClassNames.read(class_name_file)
    if "classes" in dic and list(dic["classes"]) != list(classes.names):
        raise DataError(f"{class_name_file} does not match the classes of {dic_path}")
    code = dic.get("language") or "en"
    if language and language != code:
        raise DataError(f"{dic_path}: its captions are in '{code}', but the option language is '{language}'")
    return dic, classes, Vocabulary(dic["ix_to_word"], classes, dic.get("plural_of"), language_for(code, classes),
                                    agreement=dic.get("agreement"))


def held_out_classes(dic: dict, classes: ClassNames, *, noc: bool = False, source: str = "the dic") -> list[int]:
    """The dic's NOC held-out classes (its `held_out` list). A dic of the original's has no such
    list: for a NOC run (`noc`) its held-out classes are DCC's eight, as the original's code fixed
    them (misc/utils.py `noc_object`), said in a one-line notice."""
    if "held_out" not in dic and noc:
        names = dcc_class_names(classes.names, f"{source} (no 'held_out' list)")
        if source not in _noticed_dcc:
            _noticed_dcc.add(source)
            print(f"note: {source} has no 'held_out' list (a dic of the original's): NOC evaluation holds "
                  f"out DCC's eight objects: {', '.join(names)}", file=sys.stderr)
    else:
        names = dic.get("held_out") or []
    return [classes.index(n) for n in names if n in classes.names]


_noticed_dcc: set[str] = set()


class CaptionDataset(Dataset):
    def __init__(self, bundle: DataBundle, split: str | None, *, train: bool, max_images: int = -1,
                 visual_slots: bool | None = None):
        """`split` None: every image of the dic (feature extraction)."""
        self.b = bundle
        self.opt = bundle.opt
        self.train = train
        images = bundle.dic["images"]
        # (n,) int64: no Python ints for forked workers to touch
        self.rows = np.arange(len(images)) if split is None else images.rows(split)
        if max_images > 0:
            self.rows = self.rows[:max_images]
        if not len(self.rows):
            raise DataError(f"{self.opt.input_dic}: split '{split}' has no images")
        self._h5 = None
        self._feats = None
        # only the pointer decoders have visual slots; the baselines read every caption as plain words
        self.visual_slots = self.opt.att_model in POINTER_DECODERS if visual_slots is None else visual_slots

    def __len__(self) -> int:
        return len(self.rows)

    # -- per-worker file handles (opened once per process, never per item) ----------------
    def proposals(self, row: int, image_id: int) -> np.ndarray:
        """(K, 6) valid proposals of a dic row in image pixels: the detection h5 row (checked
        against the dic by DataBundle.load, which warned of bad rows), or with det_oracle the GT
        boxes (score 1)."""
        if self.opt.det_oracle:
            gt_boxes, gt_cls = self.b.boxes.get(image_id)[:2]
            return np.concatenate([gt_boxes, gt_cls[:, None], np.ones((len(gt_cls), 1))], 1).astype(np.float32)
        if self._h5 is None:
            self._h5 = ProposalReader(self.opt.proposal_h5, self.b.dic["images"].ids.tolist(),
                                      self.b.classes.num_classes, warn=False)
        dets = self._h5.rows(row, self.b.boxes.sizes.get(image_id))
        return dets[box_area(dets) > 0] if len(dets) else dets

    def _cached(self, row: int):
        if self._feats is None:
            from nbt.misc.features import FeatureCache
            feats = FeatureCache(self.opt.cached_features)
            feats.check(image_crop_size=self.opt.image_crop_size, backbone=self.opt.cnn_backend,
                        rows=len(self.b.dic["images"]))
            self._feats = feats
        return self._feats.get(row)

    # -- one image ---------------------------------------------------------------------------
    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        row = int(self.rows[index])
        image_id = self.b.dic["images"].image_id(row)
        rng = np.random.default_rng([self.opt.seed, epoch, index])
        gt_boxes, gt_cls, gt_fine, gt_group = self.b.boxes.get(image_id)
        gt_entity = self.b.boxes.entities(image_id)
        dets = self.proposals(row, image_id)
        crop, pooled = self.opt.image_crop_size, None
        if self.opt.cached_features:
            image, pooled, props, gt = self._from_cache(row, dets, gt_boxes)
            size = self._cached(row).size
            if self.train and self.opt.image_size >= crop:   # the image path's crop draw: same captions
                rng.integers(0, self.opt.image_size - crop + 1, size=2)
        else:
            path = Path(self.opt.image_path) / self.b.dic["images"].file_path(row)
            img = load_image(path)
            if img is None:
                return {"skipped": str(path)}
            size = (img.width, img.height)
            if self.train:
                img, gt, props = resize_with_boxes(img, self.opt.image_size, gt_boxes, dets)
                x0, y0 = rng.integers(0, self.opt.image_size - crop + 1, size=2)
                img, gt, props = crop_with_boxes(img, int(x0), int(y0), crop, gt, props)
            else:
                img, gt, props = resize_with_boxes(img, crop, gt_boxes, dets)
            image = to_tensor(img)
        keep_gt = box_area(gt) > 0
        gt, gt_cls, gt_fine, gt_group = gt[keep_gt], gt_cls[keep_gt], gt_fine[keep_gt], gt_group[keep_gt]
        gt_entity = gt_entity[keep_gt]
        if self.train and len(gt_group) and (gt_group < 0).all():   # no annotated groups (COCO): the captions'
            gt_group = self.caption_groups(row, gt_cls)
        keep_p = box_area(props) > 0
        props = props[keep_p][: self.opt.max_proposal]
        targets = self.encode_captions(row, props, gt, gt_cls, rng, gt_fine, gt_group, gt_entity)
        item = {"image": image, "proposals": torch.from_numpy(props), "gt": torch.from_numpy(
            np.concatenate([gt, gt_cls[:, None], gt_fine[:, None], gt_group[:, None]], 1).astype(np.float32)),
                "image_id": image_id, "row": row, "size": size, **targets}
        if pooled is not None:          # the cached proposals are filtered already: one row each
            item["regions"] = pooled
        return item

    def _from_cache(self, row: int, dets: np.ndarray, gt_boxes: np.ndarray):
        """Cached grid (D, h, w) and pooled proposals (n, D), with the proposals and GT boxes at
        the evaluation transform (the one the features were computed at)."""
        cached = self._cached(row)
        crop = self.opt.image_crop_size
        w, h = cached.size
        scale = np.array([crop / w, crop / h, crop / w, crop / h], np.float32)
        props = dets.copy()
        props[:, :4] *= scale
        props = props[box_area(props) > 0][: self.opt.max_proposal]
        if props.shape != cached.proposals.shape or not np.allclose(props, cached.proposals, atol=1e-3):
            raise DataError(f"{self.opt.cached_features}: the features of image row {row} were pooled at other "
                            f"proposals than {'the GT boxes' if self.opt.det_oracle else self.opt.proposal_h5} "
                            f"gives; rebuild them with prepro/prepro_features.py")
        return cached.grid, cached.pooled, props, gt_boxes * scale

    def encode_captions(self, row, props, gt, gt_cls, rng, gt_fine=None, gt_group=None, gt_entity=None) -> dict:
        """The targets of seq_per_img captions of image `row` (misc/targets.py)."""
        opt = self.opt
        caps = self._caption_source(row)
        S, L, R = opt.seq_per_img, opt.seq_length, len(props)
        n_caps = max(len(caps), 1)                  # no caption at all: one empty caption
        if n_caps >= S:
            chosen = rng.choice(n_caps, S, replace=False) if self.train else np.arange(S)
        else:      # fewer captions than seq_per_img: repeat (the original's randint was off by one)
            chosen = np.concatenate([np.arange(n_caps), rng.choice(n_caps, S - n_caps)])
        positives = PointerPositives.of(props, gt, gt_cls, gt_fine=gt_fine, gt_group=gt_group, gt_entity=gt_entity,
                                        group_words=self.b.boxes.group_words, iou_thresh=opt.pos_iou_thresh,
                                        score_thresh=opt.pos_score_thresh)
        attr_words = self.b.boxes.attribute_words
        vocab = self.b.vocab
        agreement = bool(vocab.agreement) and self.visual_slots
        present = set(int(c) for c in gt_cls)
        targets = CaptionTargets.empty(S, L, R)
        for s, k in enumerate(chosen):
            ids, tokens, visual = self._caption(caps, int(k), present, need_text=bool(attr_words or agreement))
            if agreement:           # the template says the neutral measure: 两颗星星 -> 两个星星 (Language.template)
                ids = np.array([vocab.encode(t) for t in self.b.language.template(list(tokens), vocab)], np.int64)
            targets.write(s, ids, tokens, visual, positives, attr_words, self.b.language.modifier_links)
        return targets.as_batch_item()

    def caption_groups(self, row: int, gt_cls: np.ndarray) -> np.ndarray:
        """Group ids of an image's GT objects as its captions tell them, for data without annotated
        groups: the objects of a class that some caption names in the plural ("two dogs") form one
        group; those of a class named only in the singular ("a dog") are a group each; a class no
        caption names has no known group (-1). Region grouping learns from these pairs."""
        named: dict[int, bool] = {}                          # class -> named in the plural somewhere
        for cls, is_plural in self._named_classes(row):
            named[cls] = named.get(cls, False) or bool(is_plural)
        group = np.full(len(gt_cls), -1, np.int64)
        next_id = 0
        for cls, is_plural in sorted(named.items()):
            members = np.flatnonzero(gt_cls == cls)
            ids = np.full(len(members), next_id) if is_plural else next_id + np.arange(len(members))
            group[members] = ids
            next_id = int(ids.max(initial=next_id - 1)) + 1
        return group

    def _named_classes(self, row: int) -> list[tuple[int, int]]:
        """(class, plural) of every visual word of the row's captions."""
        caps = self._caption_source(row)
        if isinstance(caps, list):
            return [(v.cls, v.plural) for c in caps for v in self.b.matcher.match(c)]
        vw = [self.b.captions.visual_words(int(c)) for c in caps]
        return [(int(v[2]), int(v[3])) for block in vw for v in block]

    # -- captions: arrays of the store, or token lists for rows replaced in memory -----------------
    def _caption_source(self, row: int):
        """The non-empty captions of a row: caption indices of the store (an array), or the
        token lists of a row replaced in memory (`bundle.captions[row] = ...`)."""
        store = self.b.captions
        if row in store.replaced:
            return [c for c in store.replaced[row] if c]
        return store.captions_of(row)

    def _caption(self, caps, k: int, present: set[int], need_text: bool):
        """(word ids (n,), tokens (n,) or None, visual words {pos: (length, cls, plural, fine, ref)})."""
        if k >= len(caps):                                   # the row has no caption
            return np.zeros(0, np.int64), [], {}
        if isinstance(caps, list):                           # replaced in memory: encode and match live
            tokens = caps[k]
            return [self.b.vocab.encode(t) for t in tokens], tokens, self._match(tokens, present)
        store = self.b.captions
        c = int(caps[k])
        index = store.token_index(c)
        ids = store.word_ids[index]
        if not self.visual_slots:
            return ids, store.words[index] if need_text else None, {}
        vw = store.visual_words(c)
        if all(ref >= 0 or cls in present for cls, ref in vw[:, [2, 5]].tolist()):   # the cached match holds
            visual = {int(p): (int(n), int(cls), int(pl), int(f), int(r)) for p, n, cls, pl, f, r in vw}
            return ids, store.words[index] if need_text else None, visual
        tokens = store.words[index].tolist()                 # a crop removed a class it mentions
        return ids, tokens, self._match(tokens, present)

    def _match(self, tokens: list[str], present: set[int]) -> dict:
        if not self.visual_slots:
            return {}
        return {v.pos: (v.length, v.cls, v.plural, v.fine, -1) for v in self.b.matcher.match(tokens, present)}


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
    regions = torch.zeros(B, R, items[0]["regions"].shape[1]) if "regions" in items[0] else None
    for b, it in enumerate(items):
        r, g = len(it["proposals"]), len(it["gt"])
        props[b, :r], prop_mask[b, :r] = it["proposals"], True
        gt[b, :g], gt_mask[b, :g] = it["gt"], True
        pos[b, :, :, :r] = it["pos"]
        if regions is not None:
            regions[b, :r] = it["regions"]
    out = {
        "images": torch.stack([it["image"] for it in items]),        # (B, 3, H, W) or (B, D, h, w)
        "proposals": props, "prop_mask": prop_mask,                   # (B, R, 6), (B, R)
        "gt": gt, "gt_mask": gt_mask,                                 # (B, G, 7) x1 y1 x2 y2 cls fine group
        "words": torch.stack([it["words"] for it in items]),          # (B, S, L)
        "vis_cls": torch.stack([it["vis_cls"] for it in items]),
        "plural": torch.stack([it["plural"] for it in items]),
        "fine": torch.stack([it["fine"] for it in items]),
        "pos": pos,                                                   # (B, S, L, R)
        "image_ids": [it["image_id"] for it in items], "rows": [it["row"] for it in items],
        "sizes": [it["size"] for it in items],                        # original (width, height)
        "n_visual": sum(it["n_visual"] for it in items),
        "n_grounded": sum(it["n_grounded"] for it in items),
        "skipped": skipped,
    }
    if regions is not None:
        out["region_feats"] = regions                                 # (B, R, D) cached RoIAlign features
    return out


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
