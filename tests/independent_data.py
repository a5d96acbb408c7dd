"""An independent grounded dataset in the real file formats, written without the project's code.

Nothing here imports `misc/` or `prepro/` (and none of it was derived from the project's own world
generator): the point is data that the project did not write. Deterministic from a seed.

What it draws. Each image (96..160 px wide and high, independently, so most are not square and
none needs to equal a crop size) holds 1..3 *groups*; a group is 1..3 objects of one kind of one
category, drawn with PIL. Categories (COCO ids deliberately non-contiguous and not in class-file
order), their kinds (the fine-grained words) and the plurals the captions use:

    id  category  kinds (singular / plural)
     3  person    man / men, woman / women          (also "a person" / "two people")
     7  cup       cup / cups, coffee mug / coffee mugs
    11  mouse     mouse / mice
    15  car       car / cars, taxi / taxis
    42  knife     knife / knives, cleaver / cleavers
    58  sheep     sheep / sheep, lamb / lambs        (held out by the NOC split)
    64  leaf      leaf / leaves
    90  bus       bus / buses, school bus / school buses   (held out by the NOC split)
     5  plate     (in the instances, not in the class-name file: a category a user ignores)

Captions are raw English (capitals, punctuation, stray spaces): counts ("two mice", "three
knives"), relative positions, a few captions without any object word, and a few verbs that share
a lemma with a class word ("cupped", "leafing") which are *not* visual words.

A simulated detector writes coco-mini's detection JSON with LOW scores (true objects 0.25-0.6,
duplicates lower, false positives 0.05-0.3), box jitter, misses, duplicates and class confusions.

Files written into `out/`:
    images/{train,val}/<12-digit id>.jpg
    annotations/captions_{train,val}.json     COCO captions (raw strings)
    annotations/instances_{train,val}.json    COCO instances (xywh boxes, no `attributes`)
    dataset_indep.json                        Karpathy-style split file (tokens + raw)
    indep_class_name.txt                      class-name file (class name first, then its words)
    detections_indep.json                     detections, coco-mini's format
    split_noc_indep.json                      DCC-style NOC split (five dicts, NO held-out list)
    split_robust_indep.json                   robust split {train_id, val_id, test_id}
    truth.json                                what the project never reads: kinds, plurals, splits

    python tests/independent_data.py --out /tmp/indep --n_images 1800 --seed 11
"""
from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------
# Categories, kinds and their English
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    word: str                  # singular fine-grained word
    plural: str                # its plural, as the captions write it
    aspect: tuple              # (min, max) width / height of the canonical drawing
    size: tuple                # (min, max) long side in pixels
    rotate: bool = False       # may be drawn turned by 90 degrees (elongated things)


@dataclass(frozen=True)
class Category:
    id: int
    name: str
    kinds: tuple
    generic: tuple = ()        # (singular, plural) a caption may use for any kind: person / people
    verb: str = "sitting"      # "Two mice sitting next to a cup."


CATEGORIES = (
    Category(3, "person", (Kind("man", "men", (0.45, 0.6), (34, 48)),
                           Kind("woman", "women", (0.5, 0.65), (34, 48))),
             generic=("person", "people"), verb="standing"),
    Category(7, "cup", (Kind("cup", "cups", (0.8, 1.0), (20, 30)),
                        Kind("coffee mug", "coffee mugs", (1.15, 1.35), (22, 32)))),
    Category(11, "mouse", (Kind("mouse", "mice", (1.6, 2.0), (24, 34)),), verb="sitting"),
    Category(15, "car", (Kind("car", "cars", (1.6, 2.0), (32, 44)),
                         Kind("taxi", "taxis", (1.6, 2.0), (32, 44))), verb="parked"),
    Category(42, "knife", (Kind("knife", "knives", (3.2, 4.2), (32, 46), rotate=True),
                           Kind("cleaver", "cleavers", (2.0, 2.6), (28, 40), rotate=True)), verb="lying"),
    Category(58, "sheep", (Kind("sheep", "sheep", (1.3, 1.6), (32, 44)),
                           Kind("lamb", "lambs", (1.2, 1.45), (24, 32))), verb="standing"),
    Category(64, "leaf", (Kind("leaf", "leaves", (1.5, 1.9), (24, 36), rotate=True),), verb="lying"),
    Category(90, "bus", (Kind("bus", "buses", (1.9, 2.4), (44, 58)),
                         Kind("school bus", "school buses", (1.9, 2.4), (44, 58))), verb="parked"),
)
PLATE = Category(5, "plate", (Kind("plate", "plates", (1.3, 1.6), (28, 40)),))
HELD_OUT = ("bus", "sheep")                   # the NOC split's novel classes
NOC_WORD_MAP = {"bus": "car", "sheep": "mouse"}
ROBUST_TEST_PAIRS = (("knife", "mouse"), ("cup", "leaf"))
# Class-name file line order: deliberately not COCO id order, so an id-order mapping would be wrong.
CLASS_FILE_ORDER = ("knife", "person", "sheep", "cup", "bus", "leaf", "mouse", "car")
BY_NAME = {c.name: c for c in CATEGORIES}
# Confusions of the simulated detector (a plausible look-alike).
CONFUSE = {"cup": "mouse", "mouse": "cup", "car": "bus", "bus": "car", "sheep": "mouse",
           "knife": "leaf", "leaf": "knife", "person": "knife"}
NUMBER = {1: "a", 2: "two", 3: "three"}


def class_file_lines() -> list[str]:
    """One line per class: the class name first, then its other words (the original's format)."""
    lines = []
    for name in CLASS_FILE_ORDER:
        cat = BY_NAME[name]
        words = [cat.name] + [k.word for k in cat.kinds if k.word != cat.name]
        lines.append(", ".join(words))
    return lines


def plural_table() -> dict[str, str]:
    """Every class-file word -> its plural (what the captions use)."""
    table = {}
    for cat in CATEGORIES:
        for k in cat.kinds:
            table[k.word] = k.plural
        if cat.generic:
            table[cat.generic[0]] = cat.generic[1]
    return table


# ---------------------------------------------------------------------------------------------
# Drawing: every kind is drawn on its own transparent canvas, then pasted; its box is the
# bounding box of the pasted alpha (tight by construction).
# ---------------------------------------------------------------------------------------------


def _jit(rng: random.Random, rgb, amount: int = 18) -> tuple:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def _wheels(d, w, h, rng):
    r = max(2, int(0.16 * h))
    for cx in (int(0.22 * w), int(0.78 * w)):
        d.ellipse([cx - r, h - 2 * r - 1, cx + r, h - 1], fill=(25, 25, 25))


def draw_person(d, w, h, rng, woman: bool):
    skin = _jit(rng, rng.choice([(240, 200, 170), (200, 150, 110), (140, 95, 60)]))
    r = max(3, int(min(0.13 * h, 0.4 * w)))
    cx = w // 2
    if woman:
        d.ellipse([cx - r - 2, 0, cx + r + 2, 2 * r + 4], fill=_jit(rng, (90, 50, 20)))     # hair
        dress = _jit(rng, rng.choice([(210, 40, 60), (150, 60, 170), (230, 110, 160)]))
        d.polygon([(cx, 2 * r), (0, int(0.8 * h)), (w - 1, int(0.8 * h))], fill=dress)
        for x in (cx - w // 6, cx + w // 6):
            d.line([(x, int(0.8 * h)), (x, h - 1)], fill=skin, width=2)
    else:
        shirt = _jit(rng, rng.choice([(40, 70, 160), (30, 120, 60), (60, 60, 60)]))
        d.rectangle([int(0.15 * w), 2 * r, int(0.85 * w), int(0.62 * h)], fill=shirt)
        d.line([(int(0.15 * w), 2 * r + 2), (0, int(0.55 * h))], fill=shirt, width=2)
        d.line([(int(0.85 * w), 2 * r + 2), (w - 1, int(0.55 * h))], fill=shirt, width=2)
        legs = _jit(rng, (35, 35, 50))
        d.rectangle([int(0.22 * w), int(0.62 * h), cx - 1, h - 1], fill=legs)
        d.rectangle([cx + 1, int(0.62 * h), int(0.78 * w), h - 1], fill=legs)
    d.ellipse([cx - r, 1, cx + r, 1 + 2 * r], fill=skin)


def draw_cup(d, w, h, rng):
    body = _jit(rng, (245, 240, 225), 10)
    d.polygon([(0, int(0.1 * h)), (w - 1, int(0.1 * h)), (int(0.78 * w), h - 1), (int(0.22 * w), h - 1)],
              fill=body, outline=(120, 120, 120))
    d.ellipse([0, 0, w - 1, int(0.22 * h)], fill=_jit(rng, (110, 70, 40)), outline=(120, 120, 120))


def draw_mug(d, w, h, rng):
    body = _jit(rng, rng.choice([(120, 70, 35), (170, 40, 40), (40, 100, 70)]))
    d.rectangle([0, 0, int(0.72 * w), h - 1], fill=body)
    d.ellipse([int(0.5 * w), int(0.2 * h), w - 1, int(0.8 * h)], outline=body, width=max(2, w // 10))
    d.line([(1, 2), (int(0.72 * w) - 1, 2)], fill=(60, 35, 20), width=2)


def draw_mouse(d, w, h, rng):
    grey = _jit(rng, (140, 140, 145))
    d.line([(int(0.3 * w), int(0.75 * h)), (int(0.12 * w), int(0.55 * h)), (0, int(0.7 * h))],
           fill=(200, 150, 150), width=1)
    d.ellipse([int(0.22 * w), int(0.3 * h), w - 1, h - 1], fill=grey)
    d.ellipse([int(0.6 * w), 0, int(0.85 * w), int(0.5 * h)], fill=_jit(rng, (215, 160, 165)), outline=grey)
    d.ellipse([int(0.88 * w) - 1, int(0.55 * h), int(0.88 * w) + 1, int(0.55 * h) + 2], fill=(0, 0, 0))


def draw_knife(d, w, h, rng, cleaver: bool):
    handle = _jit(rng, rng.choice([(30, 30, 30), (100, 60, 30)]))
    steel = _jit(rng, (200, 205, 215), 12)
    d.rectangle([0, int(0.3 * h), int(0.33 * w), int(0.7 * h)], fill=handle)
    if cleaver:
        d.rectangle([int(0.33 * w), 0, w - 1, h - 1], fill=steel, outline=(120, 120, 130))
        r = max(1, h // 8)
        d.ellipse([w - 4 * r, r, w - 2 * r, 3 * r], fill=(0, 0, 0, 0))
    else:
        d.polygon([(int(0.33 * w), int(0.15 * h)), (int(0.8 * w), int(0.15 * h)), (w - 1, h - 1),
                   (int(0.33 * w), h - 1)], fill=steel, outline=(120, 120, 130))


def draw_sheep(d, w, h, rng, lamb: bool):
    wool = _jit(rng, (250, 238, 215) if lamb else (245, 245, 245), 8)
    head = _jit(rng, (235, 200, 180) if lamb else (30, 30, 30), 10)
    for x in (int(0.4 * w), int(0.65 * w)):
        d.rectangle([x, int(0.6 * h), x + max(2, w // 14), h - 1], fill=head if lamb else (30, 30, 30))
    for cx, cy in ((0.45, 0.35), (0.7, 0.3), (0.9, 0.45), (0.55, 0.55), (0.8, 0.6), (0.35, 0.6)):
        r = 0.2 * h
        d.ellipse([cx * w - r, cy * h - r, min(w - 1, cx * w + r), cy * h + r], fill=wool, outline=(200, 200, 200))
    d.ellipse([0, int(0.1 * h), int(0.32 * w), int(0.55 * h)], fill=head)


def draw_leaf(d, w, h, rng):
    green = _jit(rng, rng.choice([(50, 150, 50), (90, 170, 40), (200, 120, 30), (180, 60, 30)]), 15)
    t = np.linspace(0, np.pi, 12)
    top = [(float(0.08 * w + 0.92 * (w - 1) * (1 - np.cos(a)) / 2), float(h / 2 - 0.48 * h * np.sin(a))) for a in t]
    bottom = [(x, h - y) for x, y in reversed(top)]
    d.polygon(top + bottom, fill=green)
    d.line([(0, h // 2), (w - 1, h // 2)], fill=tuple(int(c * 0.6) for c in green), width=1)


def draw_vehicle(d, w, h, rng, kind: str):
    if kind in ("bus", "school bus"):
        body = _jit(rng, (245, 200, 20) if kind == "school bus" else rng.choice([(200, 30, 30), (30, 80, 190)]))
        d.rounded_rectangle([0, 0, w - 1, int(0.85 * h)], radius=3, fill=body)
        n = max(3, w // 11)
        for i in range(n):
            x0 = int(0.05 * w + i * 0.9 * w / n)
            d.rectangle([x0 + 1, int(0.12 * h), x0 + int(0.9 * w / n) - 2, int(0.42 * h)], fill=(180, 220, 245))
        if kind == "school bus":
            d.line([(0, int(0.58 * h)), (w - 1, int(0.58 * h))], fill=(20, 20, 20), width=2)
    else:
        plain = (40, 90, 200), (40, 150, 80), (120, 120, 130)
        body = _jit(rng, (245, 205, 30) if kind == "taxi" else rng.choice(plain))
        d.polygon([(int(0.2 * w), int(0.12 * h)), (int(0.72 * w), int(0.12 * h)), (int(0.88 * w), int(0.45 * h)),
                   (int(0.1 * w), int(0.45 * h))], fill=body)
        d.rectangle([int(0.27 * w), int(0.18 * h), int(0.68 * w), int(0.42 * h)], fill=(180, 220, 245))
        d.rectangle([0, int(0.42 * h), w - 1, int(0.82 * h)], fill=body)
        if kind == "taxi":
            d.rectangle([int(0.4 * w), 0, int(0.56 * w), int(0.12 * h)], fill=(30, 30, 30))
    _wheels(d, w, h, rng)


def draw_plate(d, w, h, rng):
    d.ellipse([0, 0, w - 1, h - 1], fill=_jit(rng, (235, 235, 240), 8), outline=(160, 160, 170))
    d.ellipse([int(0.2 * w), int(0.2 * h), int(0.8 * w), int(0.8 * h)], outline=(190, 190, 200))


DRAW = {
    "man": lambda d, w, h, r: draw_person(d, w, h, r, False),
    "woman": lambda d, w, h, r: draw_person(d, w, h, r, True),
    "cup": draw_cup, "coffee mug": draw_mug, "mouse": draw_mouse,
    "knife": lambda d, w, h, r: draw_knife(d, w, h, r, False),
    "cleaver": lambda d, w, h, r: draw_knife(d, w, h, r, True),
    "sheep": lambda d, w, h, r: draw_sheep(d, w, h, r, False),
    "lamb": lambda d, w, h, r: draw_sheep(d, w, h, r, True),
    "leaf": draw_leaf, "plate": draw_plate,
    **{k: (lambda kind: lambda d, w, h, r: draw_vehicle(d, w, h, r, kind))(k)
       for k in ("bus", "school bus", "car", "taxi")},
}


def render_kind(kind: Kind, rng: random.Random) -> Image.Image:
    """An RGBA sprite of one object: random size and aspect within the kind's ranges, maybe
    mirrored, elongated kinds maybe turned upright."""
    aspect = rng.uniform(*kind.aspect)
    long_side = rng.randint(*kind.size)
    if aspect >= 1:
        w, h = long_side, max(6, round(long_side / aspect))
    else:
        w, h = max(6, round(long_side * aspect)), long_side
    sprite = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    DRAW[kind.word](ImageDraw.Draw(sprite), w, h, rng)
    if rng.random() < 0.5:
        sprite = sprite.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind.rotate and rng.random() < 0.4:
        sprite = sprite.transpose(Image.Transpose.ROTATE_90)
    return sprite


def background(w: int, h: int, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    base = np.array([rng.randint(170, 250) for _ in range(3)], np.float32)
    img = np.broadcast_to(base, (h, w, 3)).copy()
    if rng.random() < 0.5:                                       # a table edge / horizon
        y = rng.randint(h // 3, 2 * h // 3)
        img[y:] *= rng.uniform(0.8, 0.95)
    img += nrng.normal(0, 6, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------


@dataclass
class Obj:
    category: Category
    kind: Kind
    box: tuple                 # x1, y1, x2, y2 (tight, pixels, exclusive right / bottom)


def _overlap(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def compose(groups: list[tuple[Category, Kind, int]], with_plate: bool, rng: random.Random,
            nrng: np.random.Generator) -> tuple[Image.Image, list[Obj]]:
    """Paste the groups' sprites at non-overlapping places; objects that do not fit are dropped."""
    w, h = rng.randint(96, 160), rng.randint(96, 160)
    img = background(w, h, rng, nrng)
    placed: list[Obj] = []
    todo = [(PLATE, PLATE.kinds[0])] if with_plate else []
    todo += [(cat, kind) for cat, kind, n in groups for _ in range(n)]
    for cat, kind in todo:
        sprite = render_kind(kind, rng)
        if sprite.width >= w - 2 or sprite.height >= h - 2:
            continue
        for _ in range(40):
            x, y = rng.randint(1, w - sprite.width - 1), rng.randint(1, h - sprite.height - 1)
            bx, by, bx2, by2 = sprite.getchannel("A").getbbox()
            box = (x + bx, y + by, x + bx2, y + by2)
            if all(_overlap(box, o.box) < 0.08 for o in placed):
                img.paste(sprite, (x, y), sprite)
                placed.append(Obj(cat, kind, box))
                break
    return img, placed


def sample_groups(rng: random.Random, novel: bool) -> list[tuple[Category, Kind, int]]:
    """1..3 groups of distinct categories; a novel image holds a held-out category, others none."""
    seen = [c for c in CATEGORIES if c.name not in HELD_OUT]
    held = [c for c in CATEGORIES if c.name in HELD_OUT]
    n = rng.choices((1, 2, 3), (0.3, 0.45, 0.25))[0]
    cats = [rng.choice(held)] if novel else []
    cats += rng.sample(seen, n - len(cats)) if n > len(cats) else []
    rng.shuffle(cats)
    return [(c, rng.choice(c.kinds), rng.choices((1, 2, 3), (0.5, 0.32, 0.18))[0]) for c in cats]


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def noun_phrase(objs: list[Obj], rng: random.Random) -> str:
    """"a mouse", "two mice", "three coffee mugs", sometimes "two people" or "a little lamb"."""
    cat, kind, n = objs[0].category, objs[0].kind, len(objs)
    sing, plur = kind.word, kind.plural
    if cat.generic and rng.random() < 0.3:
        sing, plur = cat.generic
    adj = rng.choice(["small ", "little ", "large "]) if rng.random() < 0.12 else ""
    noun = sing if n == 1 else plur
    return f"{NUMBER[n]} {adj}{noun}"


def relation(a: list[Obj], b: list[Obj], rng: random.Random) -> str:
    """Where group a is relative to group b, from their boxes' centres (image y grows downwards)."""
    def centre(objs):
        return (np.mean([(o.box[0] + o.box[2]) / 2 for o in objs]), np.mean([(o.box[1] + o.box[3]) / 2 for o in objs]))
    (ax, ay), (bx, by) = centre(a), centre(b)
    if rng.random() < 0.25:
        return rng.choice(["next to", "near", "beside"])
    if abs(ax - bx) >= abs(ay - by):
        return "to the left of" if ax < bx else "to the right of"
    return "above" if ay < by else "below"


def _is(objs: list[Obj]) -> str:
    return "is" if len(objs) == 1 else "are"


def one_caption(groups: list[list[Obj]], img_w: int, rng: random.Random) -> str:
    """One raw caption naming some of the groups (in a random order)."""
    g = groups[:]
    rng.shuffle(g)
    np_ = [noun_phrase(x, rng) for x in g]
    bg = rng.choice(["white", "plain", "pale", "grey", "light"])
    side = "left" if np.mean([(o.box[0] + o.box[2]) / 2 for o in g[0]]) < img_w / 2 else "right"
    forms = [lambda: f"{np_[0]} on a {bg} background",
             lambda: f"a close up of {np_[0]}",
             lambda: f"{np_[0]} {g[0][0].category.verb} on the {side} side of the picture",
             lambda: f"there {_is(g[0])} {np_[0]} in this picture"]
    if len(g) >= 2:
        forms += [lambda: f"{np_[0]} {relation(g[0], g[1], rng)} {np_[1]}",
                  lambda: f"{np_[0]} {g[0][0].category.verb} {relation(g[0], g[1], rng)} {np_[1]}",
                  lambda: f"there {_is(g[0])} {np_[0]} and {np_[1]} in the picture",
                  lambda: f"a busy scene with {np_[0]} and {np_[1]}"]
    if len(g) >= 3:
        forms += [lambda: f"{np_[0]}, {np_[1]} and {np_[2]} on a {bg} background",
                  lambda: f"a drawing of {np_[0]}, {np_[1]} and {np_[2]}"]
    return rng.choice(forms)()


def style(text: str, rng: random.Random) -> str:
    """COCO-like surface noise: capitals, a final period or not, the odd stray space."""
    if rng.random() < 0.8:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.7:
        text += "."
    if rng.random() < 0.1:
        text = text + " "
    if rng.random() < 0.05:
        text = text.replace(" ", "  ", 1)
    return text


def captions_for(objs: list[Obj], img_w: int, rng: random.Random) -> list[str]:
    """Five captions; every group is named by at least two of them (so an image's references
    mention each of its objects, as DCC's image labels assume)."""
    groups: dict[str, list[Obj]] = {}
    for o in objs:
        if o.category is not PLATE:
            groups.setdefault(o.category.name, []).append(o)
    glist = list(groups.values())
    for _ in range(50):
        caps = []
        for _ in range(5):
            caps.append(special_caption(glist, rng) or one_caption(glist, img_w, rng))
        named = {name: sum(_names(c, groups[name]) for c in caps) for name in groups}
        if all(v >= 2 for v in named.values()):
            break
    return [style(c, rng) for c in caps]


def _names(caption: str, objs: list[Obj]) -> bool:
    cat, kind = objs[0].category, objs[0].kind
    words = {kind.word, kind.plural} | set(cat.generic)
    tokens = re.findall(r"[a-z]+", caption.lower())
    grams = set(tokens) | {" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1)}
    return bool(grams & words)


def special_caption(groups: list[list[Obj]], rng: random.Random) -> str | None:
    """Rarely: a caption without any object word, or one with a lemma trap ("cupped", "leafing")."""
    u = rng.random()
    if u < 0.03:
        return rng.choice(["a simple drawing with nothing much going on", "an image with a plain pastel background",
                           "a picture of some things on a table", "a cartoon scene drawn by hand"])
    names = {g[0].category.name: g for g in groups}
    if u < 0.06 and "cup" in names:
        return f"someone cupped their hands near {noun_phrase(names['cup'], rng)}"
    if u < 0.09 and "leaf" in names:
        return f"someone leafing through a notebook beside {noun_phrase(names['leaf'], rng)}"
    return None


def tokens_of(caption: str) -> list[str]:
    """Karpathy-style tokens: lower case, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


# ---------------------------------------------------------------------------------------------
# A simulated detector with another score scale
# ---------------------------------------------------------------------------------------------


def _jitter(box, amount: float, w: int, h: int, rng: random.Random) -> list[float]:
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    x1 += rng.uniform(-amount, amount) * bw
    x2 += rng.uniform(-amount, amount) * bw
    y1 += rng.uniform(-amount, amount) * bh
    y2 += rng.uniform(-amount, amount) * bh
    x1, x2 = max(0.0, min(x1, w - 2.0)), min(float(w), max(x2, x1 + 2))
    y1, y2 = max(0.0, min(y1, h - 2.0)), min(float(h), max(y2, y1 + 2))
    return [round(v, 2) for v in (x1, y1, x2, y2)]


def _det(box, cat: Category, score: float) -> dict:
    return {"bbox_xyxy": box, "category_id": cat.id, "category_name": cat.name, "score": round(score, 6)}


def detect(objs: list[Obj], w: int, h: int, rng: random.Random) -> list[dict]:
    """Low-score detections: a true object is missed 8 % of the time, else found at 0.25-0.6 with
    jitter (5 % of the time under a look-alike's class), duplicated 20 % of the time at a lower
    score; 0-3 false positives per image at 0.05-0.3. Sorted by score, highest first."""
    dets = []
    for o in objs:
        if rng.random() < 0.08:
            continue
        cat = o.category
        if cat is not PLATE and rng.random() < 0.05:
            cat = BY_NAME[CONFUSE[cat.name]]
        score = rng.uniform(0.25, 0.6)
        dets.append(_det(_jitter(o.box, 0.08, w, h, rng), cat, score))
        if rng.random() < 0.2:
            dets.append(_det(_jitter(o.box, 0.25, w, h, rng), cat, score * rng.uniform(0.5, 0.9)))
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        side = rng.randint(12, 48)
        x, y = rng.uniform(0, w - side / 2), rng.uniform(0, h - side / 2)
        box = [round(x, 2), round(y, 2), round(min(w, x + side * rng.uniform(0.6, 1.6)), 2), round(min(h, y + side), 2)]
        dets.append(_det(box, rng.choice(CATEGORIES + (PLATE,)), rng.uniform(0.05, 0.3)))
    return sorted(dets, key=lambda d: -d["score"])


# ---------------------------------------------------------------------------------------------
# Splits and files
# ---------------------------------------------------------------------------------------------


def roles(n: int, rng: random.Random) -> list[str]:
    """DCC-style roles: novel images (holding a held-out class) are halved 1:3 into val / test;
    of the others, val_train and test_train are the negatives the F1 needs; the rest is train."""
    n_nv, n_nt, n_vt, n_tt = max(2, round(n / 30)), max(4, round(n / 10)), max(2, round(n / 30)), max(4, round(n / 10))
    out = ["val"] * n_nv + ["test"] * n_nt + ["val_train"] * n_vt + ["test_train"] * n_tt
    out += ["train"] * (n - len(out))
    rng.shuffle(out)
    return out


def _coco_image(im: dict) -> dict:
    return {"license": 4, "file_name": Path(im["file_path"]).name, "coco_url": "", "height": im["height"],
            "width": im["width"], "date_captured": "2026-01-01 00:00:00", "flickr_url": "", "id": im["id"]}


def _header() -> dict:
    return {"info": {"description": "independent grounded test set (tests/independent_data.py)", "version": "1.0",
                     "year": 2026}, "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4,
                                                  "name": "Attribution License"}]}


def write_coco(out: Path, images: list[dict]) -> None:
    cats = sorted(CATEGORIES + (PLATE,), key=lambda c: c.id)
    categories = [{"supercategory": "thing", "id": c.id, "name": c.name} for c in cats]
    ann_id = cap_id = 0
    for folder in ("train", "val"):
        mine = [im for im in images if im["folder"] == folder]
        caps, inst = [], []
        for im in mine:
            for c in im["captions"]:
                cap_id += 1
                caps.append({"image_id": im["id"], "id": cap_id, "caption": c})
            for o in im["objects"]:
                ann_id += 1
                x1, y1, x2, y2 = o["box"]
                inst.append({"segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]], "area": float((x2 - x1) * (y2 - y1)),
                             "iscrowd": 0, "image_id": im["id"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "category_id": o["category_id"], "id": ann_id})
        coco_images = [_coco_image(im) for im in mine]
        _dump(out / "annotations" / f"captions_{folder}.json",
              {**_header(), "images": coco_images, "annotations": caps})
        _dump(out / "annotations" / f"instances_{folder}.json",
              {**_header(), "images": coco_images, "annotations": inst, "categories": categories})


def write_karpathy(out: Path, images: list[dict], rng: random.Random) -> None:
    """Karpathy's layout: train folder -> train (a tenth restval), val folder -> val / test."""
    entries, sent = [], 0
    for k, im in enumerate(images):
        if im["folder"] == "train":
            split = "restval" if rng.random() < 0.1 else "train"
        else:
            split = "val" if rng.random() < 0.5 else "test"
        sentences = []
        for c in im["captions"]:
            sentences.append({"tokens": tokens_of(c), "raw": c, "imgid": k, "sentid": sent})
            sent += 1
        entries.append({"filepath": im["folder"], "filename": Path(im["file_path"]).name, "imgid": k,
                        "cocoid": im["id"], "split": split, "sentids": [s["sentid"] for s in sentences],
                        "sentences": sentences})
    _dump(out / "dataset_indep.json", {"dataset": "indep", "images": entries})


def write_splits(out: Path, images: list[dict], rng: random.Random) -> None:
    noc = {k: {} for k in ("train", "val", "val_train", "test", "test_train")}
    for im in images:
        noc[im["role"]][str(im["id"])] = 1
    _dump(out / "split_noc_indep.json", noc)
    pairs = {frozenset(p) for p in ROBUST_TEST_PAIRS}
    pool, train = [], []
    for im in images:
        names = {o["category"] for o in im["objects"]}
        (pool if any(p <= names for p in pairs) else train).append(im["id"])
    rng.shuffle(pool)
    n_val = round(0.3 * len(pool))
    _dump(out / "split_robust_indep.json",
          {"train_id": sorted(train), "val_id": sorted(pool[:n_val]), "test_id": sorted(pool[n_val:])})


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_image(image_id: int, role: str, rng: random.Random, nrng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One image with its objects, captions and detections; a novel image keeps its held-out group."""
    novel = role in ("val", "test")
    while True:
        groups = sample_groups(rng, novel)
        groups.sort(key=lambda g: g[0].name not in HELD_OUT)     # place the held-out group first
        img, objs = compose(groups, rng.random() < 0.15, rng, nrng)
        names = {o.category.name for o in objs}
        if names - {"plate"} and (not novel or names & set(HELD_OUT)):
            break
    folder = "train" if role == "train" else "val"
    record = {"id": image_id, "folder": folder, "file_path": f"{folder}/{image_id:012d}.jpg", "role": role,
              "width": img.width, "height": img.height,
              "captions": captions_for(objs, img.width, rng),
              "objects": [{"box": list(o.box), "category": o.category.name, "category_id": o.category.id,
                           "kind": o.kind.word} for o in objs],
              "detections": detect(objs, img.width, img.height, rng)}
    return img, record


def write_dataset(out: str | Path, *, n_images: int = 1800, seed: int = 11) -> Path:
    """Write every file of the dataset into `out` (see the module docstring); returns `out`."""
    out = Path(out)
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    ids = rng.sample(range(1, 600_000), n_images)
    images = []
    for image_id, role in zip(ids, roles(n_images, rng)):
        img, record = make_image(image_id, role, rng, nrng)
        path = out / "images" / record["file_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=92)
        images.append(record)
    images.sort(key=lambda im: (im["folder"] != "train", im["id"]))
    write_coco(out, images)
    write_karpathy(out, images, rng)
    write_splits(out, images, rng)
    (out / "indep_class_name.txt").write_text("\n".join(class_file_lines()) + "\n")
    _dump(out / "detections_indep.json",
          [{"image_id": im["id"], "file_name": Path(im["file_path"]).name, "split": im["folder"],
            "width": im["width"], "height": im["height"], "detections": im["detections"]} for im in images])
    truth = {"held_out": list(HELD_OUT), "noc_word_map": NOC_WORD_MAP, "plurals": plural_table(),
             "lemma_traps": {"cupped": "cup", "leafing": "leaf"}, "class_file_order": list(CLASS_FILE_ORDER),
             "category_ids": {c.name: c.id for c in CATEGORIES + (PLATE,)},
             "images": [{k: im[k] for k in ("id", "file_path", "role", "width", "height", "objects", "captions")}
                        for im in images]}
    _dump(out / "truth.json", truth)
    return out


# ---------------------------------------------------------------------------------------------
# The run's config: the world's NOC config with this dataset's paths
# ---------------------------------------------------------------------------------------------

DATA_KEYS = ("dataset", "input_json", "input_dic", "image_path", "proposal_h5", "instances_json",
             "class_name_file", "cached_tokens", "id", "noc_word_map")


def prepro_paths(data: Path) -> dict[str, Path]:
    """Where the pipeline writes its files inside the data folder."""
    return {"dic": data / "noc" / "dic_indep.json", "cap": data / "noc" / "cap_indep.json",
            "df": data / "noc" / "indep-train-df.json", "h5": data / "indep_detection.h5"}


def write_config(data: str | Path, base_cfg: str | Path, run_id: str = "noc_indep") -> Path:
    """`data/noc_indep.yml`: every setting of `base_cfg` (cfgs/noc_world.yml: model size, epochs,
    batch size, learning rate, NOC decoding) except the data paths, the run id and the word map."""
    data = Path(data).resolve()
    cfg = yaml.safe_load(Path(base_cfg).read_text())
    p = prepro_paths(data)
    cfg.update({"dataset": "coco", "input_json": str(p["cap"]), "input_dic": str(p["dic"]),
                "image_path": str(data / "images"), "proposal_h5": str(p["h5"]),
                "instances_json": [str(data / "annotations" / f"instances_{f}.json") for f in ("train", "val")],
                "class_name_file": str(data / "indep_class_name.txt"), "cached_tokens": str(p["df"]),
                "id": run_id, "noc_word_map": dict(NOC_WORD_MAP)})
    path = data / f"{run_id}.yml"
    path.write_text(f"# {Path(base_cfg).name} with the independent dataset's paths (tests/independent_data.py)\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


def pipeline(data: str | Path, root: str | Path, python: str, run_id: str,
             extra: list[str] = ()) -> list[tuple[str, list[str]]]:
    """The project's commands as a user runs them (cwd = `data`): captions -> dic / cap with the
    DCC split file, detection JSON -> h5, train + evaluate (greedy), then constrained beam search
    in novel mode. `extra` flags go to both main.py calls."""
    data, root = Path(data).resolve(), Path(root).resolve()
    ann, p, cls = data / "annotations", prepro_paths(data), str(data / "indep_class_name.txt")
    cfg = str(data / f"{run_id}.yml")
    return [
        ("prepro", [python, str(root / "prepro" / "prepro_dic_coco.py"),
                    "--captions_json", str(ann / "captions_train.json"), str(ann / "captions_val.json"),
                    "--class_name_file", cls,
                    "--instances_json", str(ann / "instances_train.json"), str(ann / "instances_val.json"),
                    "--split", "noc", "--split_file", str(data / "split_noc_indep.json"),
                    "--output_dic", str(p["dic"]), "--output_cap", str(p["cap"]), "--output_df", str(p["df"])]),
        ("detections", [python, str(root / "prepro" / "prepro_det.py"), "--input_dic", str(p["dic"]),
                        "--class_name_file", cls, "--output_h5", str(p["h5"]),
                        "--from_json", str(data / "detections_indep.json")]),
        ("train", [python, str(root / "main.py"), "--path_opt", cfg, *extra]),
        ("cbs", [python, str(root / "main.py"), "--path_opt", cfg, "--inference_only", "True",
                 "--start_from", f"save/{run_id}", "--cbs", "True", "--cbs_mode", "novel", "--beam_size", "3",
                 "--id", f"{run_id}_cbs", *extra]),
    ]


# ---------------------------------------------------------------------------------------------
# Scores computed from the truth, independently of the project's evaluation code
# ---------------------------------------------------------------------------------------------

COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
ADJECTIVES = {"small", "little", "large"}


def slot_tokens(tagged: str) -> list[str]:
    """"two [coffee mugs] near a [knife]" -> ["two", "[coffee mugs]", "near", "a", "[knife]"]: the
    token positions the results' `grounding[*].position` refer to."""
    return re.findall(r"\[[^\]]*\]|\S+", tagged)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def mention_words(name: str) -> set[str]:
    """DCC-style synonym list of a category: its class-file words, their plurals (and "busses")."""
    cat = BY_NAME[name]
    words = {k.word for k in cat.kinds} | {k.plural for k in cat.kinds} | set(cat.generic) | {cat.name}
    return words | ({"busses"} if name == "bus" else set())


def _mentions(text: str, words: set[str]) -> bool:
    tokens = tokens_of(text)
    return bool((set(tokens) | {" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1)}) & words)


def noc_f1(preds: dict[int, str], truth: dict[int, dict], name: str) -> dict:
    """DCC F1 of one held-out category over the predicted images: an image is positive when one
    of its reference captions mentions the category, predicted positive when the caption does."""
    words = mention_words(name)
    tp = fp = fn = 0
    for image_id, caption in preds.items():
        gt = any(_mentions(c, words) for c in truth[image_id]["captions"])
        pr = _mentions(caption, words)
        tp, fp, fn = tp + (gt and pr), fp + (pr and not gt), fn + (gt and not pr)
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "precision": prec, "recall": rec,
            "positives": tp + fn}


def slot_scores(predictions: list[dict], truth: dict[int, dict], crop: int) -> dict:
    """Plural, number-word, fine-grained and grounding accuracy of the generated visual words,
    against this generator's truth (plural = more than one object of the word's category in the
    image: each image holds one kind per category, so category and kind counts agree)."""
    plural_words = {v: k for k, v in plural_table().items()}
    n = {"slots": 0, "present": 0, "plural_ok": 0, "numbered": 0, "number_ok": 0, "fine_ok": 0,
         "grounded": 0, "grounded_crop": 0}
    for p in predictions:
        im = truth[p["image_id"]]
        tokens = slot_tokens(p["tagged"])
        for g in p["grounding"]:
            n["slots"] += 1
            objs = [o for o in im["objects"] if o["category"] == g["class"]]
            if not objs:
                continue
            n["present"] += 1
            n["plural_ok"] += int(g["plural"] == int(len(objs) > 1))
            k = g["position"] - 1
            while k >= 0 and tokens[k] in ADJECTIVES:
                k -= 1
            if k >= 0 and tokens[k] in COUNT_WORDS:
                n["numbered"] += 1
                n["number_ok"] += int(COUNT_WORDS[tokens[k]] == len(objs))
            word = plural_words.get(g["word"], g["word"])
            cat = BY_NAME[g["class"]]
            n["fine_ok"] += int(word == objs[0]["kind"] or word in cat.generic)
            sx, sy = crop / im["width"], crop / im["height"]
            n["grounded"] += int(max(_iou(g["box"], o["box"]) for o in objs) >= 0.5)
            n["grounded_crop"] += int(max(_iou(g["box"], [o["box"][0] * sx, o["box"][1] * sy, o["box"][2] * sx,
                                                          o["box"][3] * sy]) for o in objs) >= 0.5)
    d = max(n["present"], 1)
    return {"visual_words": n["slots"], "of_a_present_category": n["present"] / max(n["slots"], 1),
            "plural_accuracy": n["plural_ok"] / d,
            "number_word_accuracy": n["number_ok"] / n["numbered"] if n["numbered"] else None,
            "numbered_visual_words": n["numbered"],
            "fine_grained_accuracy": n["fine_ok"] / d, "grounding_accuracy": n["grounded"] / max(n["slots"], 1),
            "grounding_accuracy_if_boxes_in_crop_pixels": n["grounded_crop"] / max(n["slots"], 1)}


def independent_scores(results: dict, truth_json: dict, crop: int) -> dict:
    """All of the above for one eval_results/*.json."""
    truth = {im["id"]: im for im in truth_json["images"]}
    preds = {p["image_id"]: p["caption"] for p in results["imgToEval"]}
    noc = {name: noc_f1(preds, truth, name) for name in truth_json["held_out"]}
    return {"noc": noc, "noc_f1": float(np.mean([v["f1"] for v in noc.values()])),
            **slot_scores(results["imgToEval"], truth, crop)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder to write the dataset into")
    p.add_argument("--n_images", type=int, default=1800, help="number of images")
    p.add_argument("--seed", type=int, default=11, help="random seed (same seed, same files)")
    args = p.parse_args(argv)
    out = write_dataset(args.out, n_images=args.n_images, seed=args.seed)
    print(f"wrote {args.n_images} images and their files to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
