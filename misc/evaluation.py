"""Evaluation: caption generation over a split, coco-caption metrics, NOC F1, grounding report.

`CaptionEvaluator` follows detectron2's protocol: reset() / process(batch, captions) / evaluate().

NOC F1 has one of two definitions per run, named in the results (`noc.metric`):
- "DCC F1" when every held-out class is one of DCC's eight objects (misc/dcc.py: DCC's word lists,
  tp / fn over the object's novel images, fp over its train images, from DCC's annotation files
  in `dcc_annotations` or derived from the split's references, `noc.sets` says which);
- "class-file F1" otherwise (the built-in world, other data sets): the class's class-file words
  and their plurals; an image is positive when a reference mentions them.
"""
from __future__ import annotations

import numpy as np

from nbt.misc.dcc import dcc_f1, dcc_object, derive_dcc_sets, read_dcc_sets
from nbt.misc.language import language_of
from nbt.misc.transforms import box_iou


# Each accuracy of the grounding report and its counts (right, of): tables print them side by side.
ACCURACY_COUNTS = {
    "grounding_accuracy": ("grounded_words", "visual_words"),
    "fine_grained_accuracy": ("fine_grained_right", "fine_grained_words"),
    "plural_accuracy": ("plural_right", "plural_words"),
    "plural_accuracy_by_annotated_groups": ("plural_right_by_annotated_groups", "plural_words_by_annotated_groups"),
    "plural_accuracy_by_category_count": ("plural_right_by_category_count", "plural_words_by_category_count"),
}


class CaptionEvaluator:
    def __init__(self, bundle, *, novel_classes: list[int] | None = None, meteor: bool = True,
                 spice: bool = False, split: str = "test", dcc_annotations: str = ""):
        self.b = bundle
        self.novel_classes = list(novel_classes or [])
        self.meteor, self.spice = meteor, spice
        self.split, self.dcc_annotations = split, dcc_annotations
        self.reset()

    def reset(self) -> None:
        self.preds: dict[int, dict] = {}
        self.refs: dict[int, list[str]] = {}           # segmented references, tokens joined by spaces
        self.hyps: dict[int, str] = {}                 # segmented captions, likewise
        self.grounding = {"words": 0, "correct": 0, "fine_words": 0, "fine_correct": 0,
                          "category_words": 0, "plural_words": 0, "plural_correct": 0,
                          "plural_by_groups": 0, "plural_by_groups_correct": 0}

    def process(self, batch: dict, captions: list) -> None:
        for i, cap in enumerate(captions):
            image_id = batch["image_ids"][i]
            row = batch["rows"][i]
            self.preds[image_id] = {"image_id": image_id, **cap.to_dict()}
            self.hyps[image_id] = " ".join(cap.tokens)
            self.refs[image_id] = [" ".join(c) for c in self.b.captions[row]]
            gt = batch["gt"][i][batch["gt_mask"][i]].numpy().copy()       # (G, 7) in model pixels
            if "sizes" in batch:            # captions carry boxes in the image's pixels: so must the GT
                w, h = batch["sizes"][i]
                crop = self.b.opt.image_crop_size
                gt[:, :4] *= np.array([w / crop, h / crop, w / crop, h / crop], np.float32)
            if len(gt):
                self._ground(cap, gt)

    def _ground(self, cap, gt: np.ndarray) -> None:
        """A generated visual word is grounded when its box has IoU >= 0.5 with a GT object of the
        class it names. Then, when the GT knows the object's fine-grained kind, the word is scored
        against it: a word equal to the kind is right, even the class name ("dog" for a dog whose
        kind is "dog"); the class name for an object of another kind ("circle" for a ring) is the
        generic word, counted apart (category_name_share). Its plural flag is scored against the
        object's annotated group (same kind and attributes) when it has one, else against the
        number of GT objects of its class in the image."""
        forms = language_of(self.b.vocab).forms
        fine_words = self.b.classes.fine_words
        names = self.b.classes.names
        for g in cap.grounding:
            cls = self.b.classes.index(g["class"])
            self.grounding["words"] += 1
            same = gt[:, 4] == cls
            iou = box_iou(np.array([g["box"]], np.float32), gt[:, :4])[0]
            hit = np.where(same & (iou >= 0.5))[0]
            if not len(hit):
                continue
            self.grounding["correct"] += 1
            obj = gt[hit[np.argmax(iou[hit])]]
            said = forms.singular(g["word"])
            if obj[5] >= 0:                         # the GT knows the object's fine-grained kind
                kind = forms.singular(fine_words[int(obj[5])])
                if said == forms.singular(names[cls - 1]) and said != kind:
                    self.grounding["category_words"] += 1
                else:
                    self.grounding["fine_words"] += 1
                    self.grounding["fine_correct"] += int(said == kind)
            by_groups = obj[6] >= 0
            group = gt[:, 6] == obj[6] if by_groups else np.ones(len(gt), bool)
            right = int(g["plural"] == int((same & group).sum() > 1))
            self.grounding["plural_words"] += 1
            self.grounding["plural_correct"] += right
            self.grounding["plural_by_groups"] += int(by_groups)
            self.grounding["plural_by_groups_correct"] += right * int(by_groups)

    def grounding_report(self) -> dict:
        """The grounding numbers, each accuracy with its counts (ACCURACY_COUNTS: right, of) and the
        ground truth it was measured on; an accuracy of no words is None (the table shows 0 of 0)."""
        g = self.grounding
        n_groups, n_count = g["plural_by_groups"], g["plural_words"] - g["plural_by_groups"]
        right_groups = g["plural_by_groups_correct"]
        right_count = g["plural_correct"] - right_groups
        source = " and ".join(s for s, n in (("annotated groups", n_groups), ("category count", n_count)) if n)
        counts = {
            "visual_words": g["words"], "grounded_words": g["correct"],
            "fine_grained_words": g["fine_words"], "fine_grained_right": g["fine_correct"],
            "plural_words": g["plural_words"], "plural_right": g["plural_correct"],
            "plural_words_by_annotated_groups": n_groups, "plural_right_by_annotated_groups": right_groups,
            "plural_words_by_category_count": n_count, "plural_right_by_category_count": right_count}
        report = {acc: counts[right] / counts[of] if counts[of] else None
                  for acc, (right, of) in ACCURACY_COUNTS.items()}
        return {
            **counts, **report,
            "fine_grained_ground_truth": "annotated kinds" if g["fine_words"] + g["category_words"] else
            "none (the instances carry no fine-grained kind)",
            "category_name_share": g["category_words"] / max(g["correct"], 1),
            "plural_ground_truth": source or None,
        }

    def evaluate(self) -> dict:
        from nbt.misc.metrics import score_captions
        segmenter = language_of(self.b.vocab).metric_segmenter
        overall, per_image = score_captions(self.refs, self.hyps, meteor=self.meteor, spice=self.spice,
                                            segmenter=segmenter)
        for k, v in per_image.items():
            self.preds[k]["scores"] = v
        result = {"overall": overall, "n_images": len(self.preds), "grounding": self.grounding_report()}
        if self.novel_classes:
            result["noc"] = noc_scores(self.hyps, self.refs, self.novel_classes, self.b, self.meteor,
                                       segmenter=segmenter, split=self.split,
                                       dcc_annotations=self.dcc_annotations)
        return result


def mention_words(cls: int, bundle) -> set[str]:
    """Words that count as mentioning a class: its fine-grained words and all their plural forms
    (the DCC synonym lists, made from the class-name file: "bus" -> bus, buses, busses)."""
    forms = language_of(bundle.vocab).forms
    words = set(bundle.classes.words[cls - 1])
    return words | {p for w in words for p in forms.plurals[w]} | \
        {s for s, f in forms.surface.items() if f.word in words}


def mentions(text: str, words: set[str]) -> bool:
    tokens = text.split()
    grams = set(tokens) | {" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1)}
    return bool(grams & words)


def noc_scores(hyps: dict, refs: dict, novel_classes: list[int], bundle, meteor: bool, *, segmenter=None,
               split: str = "test", dcc_annotations: str = "") -> dict:
    """Per held-out class: its F1 (DCC's when all held-out classes are DCC objects, else by the
    class file; the module docstring) and METEOR / CIDEr on its novel images; then averages.
    hyps {id: segmented caption}, refs {id: [segmented references]}."""
    from nbt.misc.metrics import score_captions
    names = [bundle.classes.names[c - 1] for c in novel_classes]
    dcc = all(dcc_object(n) for n in names)
    per_class = {}
    for cls, name in zip(novel_classes, names):
        if dcc:
            obj = dcc_object(name)
            sets = read_dcc_sets(dcc_annotations, obj, split) if dcc_annotations else derive_dcc_sets(refs, obj)
            entry = {"dcc_object": obj, **dcc_f1(hyps, sets, obj)}
            novel_ids = [k for k in sets.novel if k in hyps]
        else:
            entry, novel_ids = class_file_f1(hyps, refs, mention_words(cls, bundle))
        if novel_ids:
            overall, _ = score_captions({k: refs[k] for k in novel_ids}, {k: hyps[k] for k in novel_ids},
                                        meteor=meteor, segmenter=segmenter)
            entry.update({"METEOR": overall.get("METEOR"), "CIDEr": overall["CIDEr"]})
        per_class[name] = entry
    avg = {m: float(np.mean([e[m] for e in per_class.values() if e.get(m) is not None]))
           for m in ("f1", "METEOR", "CIDEr") if any(e.get(m) is not None for e in per_class.values())}
    where = f"DCC's annotation files in {dcc_annotations}" if dcc_annotations else \
        f"derived from the {split} references (DCC's rule)"
    return {"metric": "DCC F1" if dcc else "class-file F1",
            "sets": where if dcc else f"images whose {split} references name the class",
            "per_class": per_class, "average": avg}


def class_file_f1(captions: dict[int, str], refs: dict, words: set[str]) -> tuple[dict, list[int]]:
    """F1 of one class by its class-file words: an image is positive when one of its references
    mentions them, predicted positive when its caption does."""
    tp = fp = fn = 0
    novel_ids = []
    for k, caption in captions.items():
        gt_pos = any(mentions(r, words) for r in refs[k])
        pr_pos = mentions(caption, words)
        tp += gt_pos and pr_pos
        fp += pr_pos and not gt_pos
        fn += gt_pos and not pr_pos
        if gt_pos:
            novel_ids.append(k)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"f1": f1, "precision": prec, "recall": rec, "novel_images": len(novel_ids)}, novel_ids
