"""The built-in grounded world: procedural images of shapes, with boxes, captions and detections.

Everything is written in the real formats the rest of the code reads, so the world exercises the
same paths as COCO:

    <out>/images/world/world_000001.png          images
    <out>/annotations/instances_world.json       COCO instances (+ per-object "attributes")
    <out>/annotations/captions_world.json        COCO captions
    <out>/dataset_world.json                     Karpathy-style split file (normal split)
    <out>/split_robust_world.json                robust split (original's format)
    <out>/split_noc_world.json                   NOC split (DCC style) + held-out classes
    <out>/world_class_name.txt                   class-name file: category, then fine-grained words
    <out>/world_detection.h5                     simulated detector (dets_labels / dets_num / nms_num)

Grounding is necessary: the detector names only the category (circle), the fine-grained word
(ring = hollow, disc = filled) and the colour / position / number must come from pixels.

    python prepro/world.py --out data/world --seed 123 --n_images 1800
    python prepro/world.py --out data/world_zh --lang zh        # the same world, captioned in Chinese

With `--lang zh` the images, objects, detections and splits are those of the English world of the
same seed; the captions (raw, unsegmented, in captions_world.json), the class-name file, the
category names and the kind / colour attributes are Chinese (world_grammar.ChinesePhrasing), and
dataset_world.json's tokens are the Chinese segmenter's (misc/language.py), the one prepro uses.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

import numpy as np
from PIL import Image, ImageDraw

from nbt.misc.detector import write_h5
from nbt.misc.io import atomic_write_json, atomic_write_text
from nbt.misc.transforms import box_iou
from nbt.prepro.splits import noc_split, robust_split
from nbt.prepro.world_grammar import PHRASINGS, CaptionGrammar, Group, Phrasing

# category -> (hollow word, filled word); the category word itself is a fine-grained word too.
CATEGORIES: dict[str, tuple[str, str]] = {
    "circle": ("ring", "disc"),
    "square": ("frame", "tile"),
    "triangle": ("tent", "wedge"),
    "star": ("spark", "badge"),
    "arrow": ("chevron", "dart"),
    "diamond": ("kite", "gem"),
    "hexagon": ("nut", "cell"),
    "heart": ("locket", "valentine"),
    "cross": ("stitch", "plus"),
    "moon": ("sickle", "crescent"),
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40), "green": (40, 165, 60), "blue": (40, 80, 215),
    "yellow": (225, 200, 30), "purple": (140, 50, 180), "orange": (240, 130, 20),
}


@dataclass
class WorldConfig:
    out: str = "data/world"
    seed: int = 123
    n_images: int = 1800
    image_size: int = 128
    categories: list = field(default_factory=lambda: ["circle", "square", "triangle", "star",
                                                      "arrow", "diamond", "hexagon", "heart"])
    min_objects: int = 1
    max_objects: int = 5
    repeat_prob: float = 0.45        # chance a new object copies an earlier one's kind and colour
    min_size: int = 20
    max_size: int = 34
    captions_per_image: int = 5
    val_fraction: float = 0.1
    test_fraction: float = 0.2       # 360 images: on 150, near-identical models differed by 5+ CIDEr
    noc_held_out: list = field(default_factory=lambda: ["hexagon", "heart"])
    robust_test_fraction: float = 0.2
    det_miss: float = 0.05           # a GT object gets no proposal
    det_jitter: float = 0.06         # box noise, fraction of the object's size
    det_confusion: float = 0.05      # a proposal gets a wrong category
    det_false_pos: float = 1.0       # mean number of random false positives per image
    det_duplicates: float = 1.0      # mean number of extra, looser boxes around true objects
    lang: str = "en"                 # caption language: en, or zh (the same world in Chinese)


def _polygon(cat: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Outline of a category's shape centred at (cx, cy) with radius r."""
    def ring(n, rad, phase=0.0):
        return [(cx + rad * math.cos(phase + 2 * math.pi * k / n),
                 cy + rad * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]
    if cat == "circle":
        return ring(40, r)
    if cat == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cat == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cat == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if cat == "arrow":
        return [(cx - r, cy - r * 0.35), (cx + r * 0.1, cy - r * 0.35), (cx + r * 0.1, cy - r),
                (cx + r, cy), (cx + r * 0.1, cy + r), (cx + r * 0.1, cy + r * 0.35),
                (cx - r, cy + r * 0.35)]
    if cat == "diamond":
        return [(cx, cy - r), (cx + r * 0.65, cy), (cx, cy + r), (cx - r * 0.65, cy)]
    if cat == "hexagon":
        return ring(6, r)
    if cat == "heart":
        pts = []
        for k in range(40):
            t = 2 * math.pi * k / 40
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 17, cy - r * (y + 2) / 17))
        return pts
    if cat == "cross":
        w = r * 0.35
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w),
                (cx + r, cy + w), (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r),
                (cx - w, cy + w), (cx - r, cy + w), (cx - r, cy - w), (cx - w, cy - w)]
    if cat == "moon":
        outer = [(cx + r * math.cos(a), cy + r * math.sin(a))
                 for a in np.linspace(math.pi / 2, 3 * math.pi / 2, 20)]
        inner = [(cx - r * 0.2 + r * 0.6 * math.cos(a), cy + r * math.sin(a))
                 for a in np.linspace(3 * math.pi / 2, math.pi / 2, 20)]
        return outer + inner
    raise ValueError(f"unknown world category {cat!r}")


def _place_objects(rng: np.random.Generator, cfg: WorldConfig) -> list[dict]:
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    objects: list[dict] = []
    tries = 0
    while len(objects) < n and tries < 200:
        tries += 1
        if objects and rng.random() < cfg.repeat_prob:
            src = objects[int(rng.integers(len(objects)))]
            cat, kind, colour = src["category"], src["kind"], src["colour"]
        else:
            cat = cfg.categories[int(rng.integers(len(cfg.categories)))]
            kind = int(rng.integers(2))
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        size = float(rng.uniform(cfg.min_size, cfg.max_size))
        r = size / 2
        cx = float(rng.uniform(r + 2, cfg.image_size - r - 2))
        cy = float(rng.uniform(r + 2, cfg.image_size - r - 2))
        box = [cx - r, cy - r, cx + r, cy + r]
        if objects and (box_iou(np.array([box]), np.array([o["box"] for o in objects])) > 0.0).any():
            continue
        objects.append({"category": cat, "kind": kind, "colour": colour, "box": box,
                        "centre": (cx, cy), "radius": r})
    return objects


def render(objects: list[dict], size: int, rng: np.random.Generator) -> Image.Image:
    base = rng.integers(225, 250)
    noise = rng.normal(0, 6, (size, size, 1))
    bg = np.clip(base + noise + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg, "RGB")
    draw = ImageDraw.Draw(img)
    for o in objects:
        pts = _polygon(o["category"], *o["centre"], o["radius"])
        colour = COLOURS[o["colour"]]
        if o["kind"] == 1:                     # filled
            draw.polygon(pts, fill=colour, outline=colour)
        else:                                  # hollow: a thick outline
            draw.line(pts + [pts[0]], fill=colour, width=3, joint="curve")
    return img


def simulate_detector(objects: list[dict], cat_index: dict[str, int], cfg: WorldConfig,
                      rng: np.random.Generator) -> np.ndarray:
    """Noisy proposals (K, 6) [x1, y1, x2, y2, class (1-based), score], sorted by score."""
    dets = []
    n_cls = len(cat_index)
    s = cfg.image_size

    def jitter(box, amount):
        w, h = box[2] - box[0], box[3] - box[1]
        d = rng.normal(0, amount, 4) * np.array([w, h, w, h])
        b = np.array(box) + d
        b = np.clip(b, 0, s - 1)
        if b[2] - b[0] < 2 or b[3] - b[1] < 2:
            return np.array(box)
        return b

    for o in objects:
        if rng.random() < cfg.det_miss:
            continue
        cls = cat_index[o["category"]]
        score = float(rng.uniform(0.6, 1.0))
        if rng.random() < cfg.det_confusion:
            cls = int(rng.integers(1, n_cls + 1))
            score = float(rng.uniform(0.3, 0.8))
        dets.append([*jitter(o["box"], cfg.det_jitter), cls, score])
    for _ in range(int(rng.poisson(cfg.det_duplicates))):
        if not objects:
            break
        o = objects[int(rng.integers(len(objects)))]
        dets.append([*jitter(o["box"], cfg.det_jitter * 4), cat_index[o["category"]],
                     float(rng.uniform(0.1, 0.6))])
    for _ in range(int(rng.poisson(cfg.det_false_pos))):
        w, h = rng.uniform(10, 40, 2)
        x, y = rng.uniform(0, s - w), rng.uniform(0, s - h)
        dets.append([x, y, x + w, y + h, int(rng.integers(1, n_cls + 1)), float(rng.uniform(0.05, 0.5))])
    dets_arr = np.array(dets, dtype=np.float32).reshape(-1, 6)
    order = np.argsort(-dets_arr[:, 5], kind="stable")
    return dets_arr[order]


@dataclass
class WorldRecords:
    """Everything generate() writes, image by image, in the real formats."""
    cat_index: dict                # category -> class index 1..C (the class-file line)
    cat_id: dict                   # category -> COCO-like category id (with gaps)
    say: Phrasing = field(default_factory=Phrasing)     # the language's words (category, kind, colour)
    segment: object = str.split                         # raw caption -> tokens (dataset_world.json)
    images: list = field(default_factory=list)          # COCO images
    instances: list = field(default_factory=list)       # COCO annotations (boxes, attributes)
    captions: list = field(default_factory=list)        # COCO caption annotations
    karpathy: list = field(default_factory=list)        # dataset_world.json entries
    dets: list = field(default_factory=list)            # per image: simulated detections (n, 6)
    mentions: dict = field(default_factory=dict)        # image id -> classes its captions name

    def add_objects(self, image_id: int, objects: list[dict]) -> None:
        for o in objects:
            x1, y1, x2, y2 = o["box"]
            self.instances.append({
                "id": len(self.instances) + 1, "image_id": image_id, "category_id": self.cat_id[o["category"]],
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0,
                "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]],
                "attributes": {"kind": self.say.word(CATEGORIES[o["category"]][o["kind"]]),
                               "colour": self.say.word(o["colour"])},
            })

    def add_captions(self, k: int, image_id: int, fname: str, sents: list) -> None:
        sentences = []
        for text, cats in sents:
            sent_id = len(self.captions) + 1
            self.mentions.setdefault(image_id, set()).update(self.cat_index[c] for c in cats)
            self.captions.append({"id": sent_id, "image_id": image_id, "caption": text})
            sentences.append({"tokens": self.segment(text), "raw": text, "imgid": k, "sentid": sent_id})
        self.mentions.setdefault(image_id, set())
        self.karpathy.append({"filepath": "world", "filename": fname, "imgid": k, "cocoid": image_id,
                              "sentids": [s["sentid"] for s in sentences], "sentences": sentences})


def generate(cfg: WorldConfig, quiet: bool = False) -> dict:
    """Write the world to cfg.out; returns a summary dict."""
    check_config(cfg)
    out = Path(cfg.out)
    img_dir = out / "images" / "world"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    say = PHRASINGS[cfg.lang]()
    rec = WorldRecords(cat_index={c: i + 1 for i, c in enumerate(cfg.categories)},
                       cat_id={c: 2 * i + 3 for i, c in enumerate(cfg.categories)}, say=say,
                       segment=segmenter(cfg))
    grammar = CaptionGrammar({c: CATEGORIES[c] for c in cfg.categories}, list(COLOURS), phrasing=say)
    for k in range(cfg.n_images):
        image_id = k + 1
        objects = _place_objects(rng, cfg)
        fname = f"world_{image_id:06d}.png"
        render(objects, cfg.image_size, rng).save(img_dir / fname)
        rec.images.append({"id": image_id, "file_name": fname, "width": cfg.image_size,
                           "height": cfg.image_size, "license": 0})
        rec.add_objects(image_id, objects)
        rec.add_captions(k, image_id, fname, grammar.captions(Group.from_objects(objects, cfg.image_size),
                                                              cfg.captions_per_image, rng))
        rec.dets.append(simulate_detector(objects, rec.cat_index, cfg, rng))
    assign_normal_split(rec.karpathy, cfg, rng)
    summary = write_world(out, cfg, rec)
    if not quiet:
        print(f"world written to {out}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
    return summary


def class_lines(cfg: WorldConfig) -> list[str]:
    """The class-name file: per category its name, then its two kind words, in the world's language."""
    say = PHRASINGS[cfg.lang]()
    return [", ".join(say.word(w) for w in [c, *CATEGORIES[c]]) for c in cfg.categories]


def held_out_names(cfg: WorldConfig) -> list[str]:
    """The NOC held-out categories by their class names in the world's language."""
    say = PHRASINGS[cfg.lang]()
    return [say.word(c) for c in cfg.noc_held_out]


def segmenter(cfg: WorldConfig):
    """The tokens of dataset_world.json: the language's own segmentation of the raw captions."""
    from nbt.misc.language import language_for
    from nbt.misc.vocab import ClassNames
    names = [line.split(", ") for line in class_lines(cfg)]
    return language_for(cfg.lang, ClassNames(tuple(n[0] for n in names), tuple(map(tuple, names)))).segment


def check_config(cfg: WorldConfig) -> None:
    if cfg.lang not in PHRASINGS:
        raise ValueError(f"unknown world language '{cfg.lang}' (known: {', '.join(PHRASINGS)})")
    for c in list(cfg.categories) + list(cfg.noc_held_out):
        if c not in CATEGORIES:
            raise ValueError(f"unknown world category '{c}' (known: {', '.join(CATEGORIES)})")
    if not set(cfg.noc_held_out) <= set(cfg.categories):
        raise ValueError("noc_held_out must be a subset of categories")


def assign_normal_split(karpathy: list[dict], cfg: WorldConfig, rng) -> None:
    """The normal split: a seeded permutation into val, test and train."""
    order = rng.permutation(cfg.n_images)
    n_val, n_test = int(cfg.n_images * cfg.val_fraction), int(cfg.n_images * cfg.test_fraction)
    split = np.array(["train"] * cfg.n_images, dtype=object)
    split[order[:n_val]] = "val"
    split[order[n_val:n_val + n_test]] = "test"
    for entry, s in zip(karpathy, split):
        entry["split"] = str(s)


def write_world(out: Path, cfg: WorldConfig, rec: WorldRecords) -> dict:
    """The COCO json files, the Karpathy json, the class file, the robust and NOC split files and
    the detection h5; returns the summary."""
    categories = [{"id": rec.cat_id[c], "name": rec.say.word(c), "supercategory": "shape"} for c in cfg.categories]
    info = {"description": f"nbt built-in grounded world (seed {cfg.seed})", "version": "1.0"}
    ann_dir = out / "annotations"
    atomic_write_json(ann_dir / "instances_world.json", {
        "info": info, "licenses": [], "images": rec.images, "annotations": rec.instances, "categories": categories})
    atomic_write_json(ann_dir / "captions_world.json", {
        "info": info, "licenses": [], "images": rec.images, "annotations": rec.captions})
    atomic_write_json(out / "dataset_world.json", {"dataset": "world", "images": rec.karpathy})
    atomic_write_text(out / "world_class_name.txt", "\n".join(class_lines(cfg)) + "\n")
    robust = robust_split(rec.mentions, max_test_images=int(cfg.n_images * cfg.robust_test_fraction),
                          seed=cfg.seed)
    atomic_write_json(out / "split_robust_world.json", robust)
    noc = noc_split(rec.mentions, [rec.cat_index[c] for c in cfg.noc_held_out], seed=cfg.seed)
    noc["held_out"] = held_out_names(cfg)
    atomic_write_json(out / "split_noc_world.json", noc)
    write_h5(out / "world_detection.h5", rec.dets)
    return {"images": cfg.n_images, "objects": len(rec.instances), "captions": len(rec.captions),
            "robust_test_pairs": len(robust["test_pairs"]), "noc_novel": len(noc["val"]) + len(noc["test"])}


def _parse(argv: list[str] | None) -> WorldConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = WorldConfig()
    for name, value in vars(defaults).items():
        if isinstance(value, list):
            p.add_argument(f"--{name}", default=",".join(value),
                           help=f"comma-separated (default: {','.join(value)})")
        else:
            p.add_argument(f"--{name}", type=type(value), default=value, help=f"(default: {value})")
    args = p.parse_args(argv)
    values = vars(args)
    for name, value in vars(defaults).items():
        if isinstance(value, list):
            values[name] = [v.strip() for v in values[name].split(",") if v.strip()]
    return WorldConfig(**values)


def main(argv: list[str] | None = None, action=generate) -> int:
    """The world's command line; `action` (generate, or prepare_world.prepare) gets the config."""
    try:
        action(_parse(argv))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
