"""Per-token training targets of a caption: which word, and for a visual word which proposals the
pointer may point at (its positives), in what number and which fine-grained word.

A visual word's positives are the proposals that
  - overlap a ground-truth box of the word's class with IoU > pos_iou_thresh,
  - were detected as that class, with a score >= pos_score_thresh,
  - when the ground truth knows fine-grained kinds (the built-in world) and the word names one
    ("disc" vs "ring"), overlap a box of that kind;
  - when the ground-truth boxes carry attributes and the phrase names some ("two red rings"),
    overlap a box with them: otherwise a pointer learns that any ring will do for "red rings";
  - when the caption names the word's object (a grounded caption's ref: Flickr30k Entities'
    phrases), overlap one of that object's boxes (of the word's class), and no other box.
A visual word without a positive proposal is trained as its text (all its words: the original kept
only the first word of a two-word name such as "teddy bear").
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nbt.misc.transforms import box_iou


@dataclass
class PointerPositives:
    iou: np.ndarray                # (R, G) IoU of each proposal with each GT box
    det_cls: np.ndarray            # (R,) detected class of each proposal
    score_ok: np.ndarray           # (R,) detection score >= pos_score_thresh
    gt_cls: np.ndarray             # (G,) class of each GT box
    gt_fine: np.ndarray            # (G,) fine-grained index of each GT box, -1 unknown
    gt_group: np.ndarray | None    # (G,) attribute group of each GT box, -1 none (None: no attributes)
    group_words: Sequence[frozenset]   # per attribute group: its set of attribute words (shared, not copied)
    iou_thresh: float
    gt_entity: np.ndarray | None = None    # (G,) entity code of each GT box, -1 none

    @staticmethod
    def of(props: np.ndarray, gt: np.ndarray, gt_cls: np.ndarray, *, gt_fine=None, gt_group=None,
           gt_entity=None, group_words=(), iou_thresh: float, score_thresh: float) -> "PointerPositives":
        """props (R, 6) x1 y1 x2 y2 class score, gt (G, 4) boxes in the same frame."""
        R = len(props)
        return PointerPositives(
            iou=box_iou(props[:, :4], gt) if R else np.zeros((0, len(gt)), np.float32),
            det_cls=props[:, 4].astype(np.int64) if R else np.zeros(0, np.int64),
            score_ok=props[:, 5] >= score_thresh if R else np.zeros(0, bool),
            gt_cls=gt_cls, gt_fine=np.full(len(gt_cls), -1) if gt_fine is None else gt_fine,
            gt_group=gt_group, group_words=group_words, iou_thresh=iou_thresh, gt_entity=gt_entity)

    def __call__(self, cls: int, fine: int, adjectives: set[str], ref: int = -1) -> np.ndarray:
        """(R,) the proposals a visual word of class cls, fine-grained word fine, described by
        `adjectives`, may point at; with ref >= 0 (the entity its caption names) only that object's."""
        boxes = self.gt_cls == cls
        if ref >= 0:
            boxes = boxes & (self.gt_entity == ref) if self.gt_entity is not None else np.zeros_like(boxes)
        elif (self.gt_fine[boxes] == fine).any():
            boxes = boxes & (self.gt_fine == fine)
        if adjectives and self.gt_group is not None:
            has = np.array([g >= 0 and adjectives <= self.group_words[g] for g in self.gt_group], bool)
            if (boxes & has).any():
                boxes = boxes & has
        hit = (self.iou[:, boxes] > self.iou_thresh).any(1) if len(self.det_cls) else np.zeros(0, bool)
        return hit & self.score_ok & (self.det_cls == cls)


@dataclass
class CaptionTargets:
    """The targets of an image's S captions, L tokens each, over R proposals."""
    words: np.ndarray              # (S, L) word id, 0 = EOS / padding
    vis_cls: np.ndarray            # (S, L) class 1..C of a visual word, else 0
    plural: np.ndarray             # (S, L) 1 plural / 0 singular
    fine: np.ndarray               # (S, L) fine-grained index, -1 for textual tokens
    pos: np.ndarray                # (S, L, R) the pointer's positives
    n_visual: int = 0              # visual words seen
    n_grounded: int = 0            # of them, with at least one positive

    @staticmethod
    def empty(S: int, L: int, R: int) -> "CaptionTargets":
        return CaptionTargets(words=np.zeros((S, L), np.int64), vis_cls=np.zeros((S, L), np.int64),
                              plural=np.zeros((S, L), np.int64), fine=np.full((S, L), -1, np.int64),
                              pos=np.zeros((S, L, R), bool))

    def write(self, s: int, ids, tokens, visual: dict, positives: PointerPositives, attr_words,
              links=frozenset()) -> None:
        """Caption s: ids (n,) word ids, tokens (n,) its words (read only for attribute words),
        visual {position: (length, cls, plural, fine, ref)} its visual words; links: the language's
        tokens between an attribute and its noun (的))."""
        L = self.words.shape[1]
        t = i = 0
        while i < len(ids) and t < L:
            v = visual.get(i)
            if v is not None:
                length, cls, is_plural, fine, ref = v
                self.n_visual += 1
                mask = positives(cls, fine, adjectives_before(tokens, i, attr_words, links) if ref < 0 else set(), ref)
                if mask.any():
                    self.n_grounded += 1
                    self.words[s, t] = ids[i + length - 1]                  # the word, for the metrics
                    self.vis_cls[s, t], self.plural[s, t], self.fine[s, t] = cls, is_plural, fine
                    self.pos[s, t] = mask
                    t += 1
                    i += length
                    continue
            self.words[s, t] = ids[i]
            t += 1
            i += 1

    def as_batch_item(self) -> dict:
        return {"words": torch.from_numpy(self.words), "vis_cls": torch.from_numpy(self.vis_cls),
                "plural": torch.from_numpy(self.plural), "fine": torch.from_numpy(self.fine),
                "pos": torch.from_numpy(self.pos), "n_visual": self.n_visual, "n_grounded": self.n_grounded}


def adjectives_before(tokens, i: int, attr_words, links=frozenset()) -> set[str]:
    """The attribute words right before position i ("two red [rings]" -> {"red"}), also through
    a link word (红色 的 [圆环] -> {红色})."""
    adjectives, j = set(), i - 1
    while attr_words and j >= 0:
        if tokens[j] in links and j > 0 and tokens[j - 1] in attr_words:
            j -= 1
        if tokens[j] not in attr_words:
            break
        adjectives.add(str(tokens[j]))
        j -= 1
    return adjectives
