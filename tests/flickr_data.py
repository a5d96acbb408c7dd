"""A small dataset in Flickr30k Entities' own release format, and the same data in the original
NBT's Flickr30k files, written without the project's code (nothing here imports misc/ or prepro/).

The formats are those of github.com/BryanPlummer/flickr30k_entities (README.md and
flickr30k_entities_utils.py): `Sentences/<id>.txt`, five captions a line with phrases marked
`[/EN#<chain id>/<type 1>/.../<type n> words]` (chain 0 = notvisual); `Annotations/<id>.xml`, a
PASCAL VOC-like file with <size> and one <object> per box, each naming its chain ids in <name> tags
and holding a <bndbox> (1-based pixels) or the flags <nobndbox> / <scene>; `train.txt`, `val.txt`,
`test.txt` listing the image ids of each split. Images are drawn with PIL: each entity's boxes hold a
figure of its class (a man, a woman, a dog, a ball, a car) on a plain background.

What the captions exercise: two entities of one class in an image ("a man ... another man": each
visual word must point at its own man), plural entities with two boxes ("two dogs"), a box shared
by two chains (an <object> with two <name>s: "a man" / "a person"), a possessive phrase whose head
is its last class word ("[the man 's ball]" names the ball), a scene entity (<scene>1</scene>: "the
beach"), an entity without a box (<nobndbox>1</nobndbox>: "the sunlight") and a notvisual phrase
("[/EN#0/notvisual each other]"), whose class words ("beach") must stay text.

Files (under `root`):
    flickr30k_entities/{Sentences,Annotations}/<id>.*, flickr30k_entities/{train,val,test}.txt
    images/<id>.jpg
    detections_flickr.json      coco-mini's detection JSON (jittered true boxes, a false positive)
    dataset_flickr30k.json      Karpathy-style split file (filename, split)
    original/dic_flickr30k.json, original/cap_flickr30k.json    the original NBT's Flickr30k files
    truth.json                  per image: entity -> class and boxes (x1 y1 x2 y2, 0-based)
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"man": (40, 70, 200), "woman": (200, 40, 160), "dog": (140, 90, 40), "ball": (230, 30, 30),
           "car": (120, 120, 120)}
TYPES = {"man": "people", "woman": "people", "dog": "animals", "ball": "other", "car": "vehicles"}
SIZES = {"man": (18, 44), "woman": (18, 42), "dog": (30, 18), "ball": (12, 12), "car": (44, 22)}
PLURAL = {"man": "men", "woman": "women", "dog": "dogs", "ball": "balls", "car": "cars"}
FIRST_ID = 5_000_000_000          # Flickr ids exceed 2**31 (and here 2**32)


def draw(d: ImageDraw.ImageDraw, cls: str, box: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = box
    c = COLOURS[cls]
    if cls in ("man", "woman"):                        # a head over a body: a block or a dress
        d.ellipse([x1 + 4, y1, x2 - 4, y1 + 10], fill=(230, 190, 150))
        if cls == "man":
            d.rectangle([x1, y1 + 10, x2, y2], fill=c)
        else:
            d.polygon([(x1 + (x2 - x1) // 2, y1 + 10), (x2, y2), (x1, y2)], fill=c)
    elif cls == "dog":
        d.ellipse([x1, y1 + 4, x2 - 6, y2], fill=c)
        d.ellipse([x2 - 10, y1, x2, y1 + 10], fill=c)
    elif cls == "ball":
        d.ellipse(box, fill=c)
    else:
        d.rectangle([x1, y1, x2, y2 - 6], fill=c)
        for cx in (x1 + 8, x2 - 8):
            d.ellipse([cx - 5, y2 - 10, cx + 5, y2], fill=(20, 20, 20))


def sample_entities(rng: random.Random) -> list[tuple[str, int]]:
    """(class, number of boxes) of an image's entities."""
    kinds = rng.sample(["man", "woman", "dog", "ball", "car"], rng.randint(1, 3))
    out = [(k, 2 if k in ("dog", "man") and rng.random() < 0.4 else 1) for k in kinds]
    if rng.random() < 0.3 and not any(k == "man" for k, _ in out):
        out = [("man", 1), ("man", 1)] + out[:1]          # two men, two entities
    return out


def phrase(chain: int, cls: str, n: int, rng: random.Random, first: bool, second_of_class: bool) -> str:
    if n > 1:
        words = f"{rng.choice(['Two', 'two'])} {PLURAL[cls]}"
    elif second_of_class:
        words = f"another {cls}"
    else:
        words = f"{'A' if first else 'a'} {rng.choice(['', 'small ', 'big '])}{cls}".replace("  ", " ")
    return f"[/EN#{chain}/{TYPES[cls]} {words}]"


def captions(ents: list[dict], scene: int, nobox: int, rng: random.Random) -> list[str]:
    out = []
    links = [" next to ", " and ", " near "]
    for k in range(5):
        seen: set[str] = set()
        parts = []
        for j, e in enumerate(ents):
            if e["alias"] and k % 2:
                parts.append(f"[/EN#{e['alias']}/people {'A' if j == 0 else 'a'} person]")
            elif e["cls"] == "ball" and any(o["cls"] == "man" for o in ents) and k == 3:
                parts.append(f"[/EN#{e['chain']}/other the man 's ball]")
            else:
                parts.append(phrase(e["chain"], e["cls"], len(e["boxes"]), rng, j == 0, e["cls"] in seen))
            seen.add(e["cls"])
        text = parts[0] + "".join(rng.choice(links) + p for p in parts[1:])
        tail = [f" on [/EN#{scene}/scene the beach] .", f" in [/EN#{nobox}/other the sunlight] .",
                " , looking at [/EN#0/notvisual each other] .", " ."][k % 4]
        out.append(text + tail)
    return out


def xml(image_id: int, w: int, h: int, ents: list[dict], scene: int, nobox: int) -> str:
    objs = []
    for e in ents:
        for x1, y1, x2, y2 in e["boxes"]:
            names = "".join(f"\t\t<name>{c}</name>\n" for c in (e["chain"], e["alias"]) if c)
            objs.append(f"\t<object>\n{names}\t\t<bndbox>\n\t\t\t<xmin>{x1 + 1}</xmin>\n\t\t\t<ymin>{y1 + 1}</ymin>\n"
                        f"\t\t\t<xmax>{x2 + 1}</xmax>\n\t\t\t<ymax>{y2 + 1}</ymax>\n\t\t</bndbox>\n\t</object>\n")
    objs.append(f"\t<object>\n\t\t<name>{scene}</name>\n\t\t<nobndbox>0</nobndbox>\n\t\t<scene>1</scene>\n\t</object>\n")
    objs.append(f"\t<object>\n\t\t<name>{nobox}</name>\n\t\t<nobndbox>1</nobndbox>\n\t\t<scene>0</scene>\n\t</object>\n")
    return (f"<annotation>\n\t<filename>{image_id}.jpg</filename>\n\t<size>\n\t\t<width>{w}</width>\n"
            f"\t\t<height>{h}</height>\n\t\t<depth>3</depth>\n\t</size>\n" + "".join(objs) + "</annotation>\n")


def original_caption(line: str, ents: list[dict]) -> dict:
    """An Entities line -> the original's {caption, clss, bbox, idx}: lower-case words without
    punctuation; each boxed phrase's last class word, one entry per box."""
    chains = {e["chain"]: e for e in ents} | {e["alias"]: e for e in ents if e["alias"]}
    tokens, clss, bbox, idx = [], [], [], []
    chain = None
    for tok in line.split():
        if tok.startswith("["):
            chain = int(tok.split("/")[1][3:])
            continue
        word = tok.rstrip("]").lower()
        if word.isalpha() or word == "'s":
            tokens.append(word)
        if chain in chains and tok.endswith("]"):
            e = chains[chain]
            head = e["cls"] if chain == e["chain"] else "person"
            for box in e["boxes"]:
                clss.append(head)
                bbox.append(list(box))
                idx.append(len(tokens) - 1)
        if tok.endswith("]"):
            chain = None
    return {"caption": tokens, "clss": clss, "bbox": bbox, "idx": idx}


def write_dataset(root: str | Path, *, n_train: int = 16, n_val: int = 4, n_test: int = 4, seed: int = 3) -> Path:
    root = Path(root)
    rng = random.Random(seed)
    ent_dir = root / "flickr30k_entities"
    for sub in ("Sentences", "Annotations"):
        (ent_dir / sub).mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    chain = 300000
    splits = {"train": [], "val": [], "test": []}
    dets, truth, dic_images, caps, karpathy = [], {}, [], [], []
    n = {"train": n_train, "val": n_val, "test": n_test}
    k = 0
    for split in ("train", "val", "test"):
        for _ in range(n[split]):
            image_id = FIRST_ID + 7919 * k
            k += 1
            h = rng.randint(96, 120)
            ents, x = [], 4
            for cls, count in sample_entities(rng):        # boxes left to right, on the ground
                boxes = []
                for _ in range(count):
                    bw, bh = SIZES[cls]
                    y1 = rng.randint(h - bh - 30, h - bh - 4)
                    boxes.append((x, y1, x + bw, y1 + bh))
                    x += bw + rng.randint(4, 10)
                chain += 1
                alias = chain + 500000 if cls == "man" and len(boxes) == 1 and rng.random() < 0.5 else 0
                ents.append({"chain": chain, "alias": alias, "cls": cls, "boxes": boxes})
            scene, nobox = chain + 1, chain + 2
            chain += 2
            w = max(x, 120) + rng.randint(4, 30)
            img = Image.new("RGB", (w, h), tuple(rng.randint(190, 240) for _ in range(3)))
            d = ImageDraw.Draw(img)
            for e in ents:
                for box in e["boxes"]:
                    draw(d, e["cls"], box)
            img.save(root / "images" / f"{image_id}.jpg", quality=95)
            lines = captions(ents, scene, nobox, rng)
            (ent_dir / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
            (ent_dir / "Annotations" / f"{image_id}.xml").write_text(xml(image_id, w, h, ents, scene, nobox))
            splits[split].append(image_id)
            truth[str(image_id)] = {"size": [w, h], "entities": {str(e["chain"]): {
                "class": e["cls"], "boxes": e["boxes"], "alias": e["alias"]} for e in ents}}
            dets.append({"image_id": image_id, "width": w, "height": h, "detections": [
                {"bbox_xyxy": [b[0] + rng.uniform(-1.5, 1.5), b[1] + rng.uniform(-1.5, 1.5),
                               b[2] + rng.uniform(-1.5, 1.5), b[3] + rng.uniform(-1.5, 1.5)],
                 "category_name": e["cls"], "score": round(rng.uniform(0.7, 0.95), 3)}
                for e in ents for b in e["boxes"]] + [
                {"bbox_xyxy": [w - 30.0, 2.0, w - 4.0, 20.0], "category_name": rng.choice(list(COLOURS)),
                 "score": round(rng.uniform(0.05, 0.3), 3)}]})
            dic_images.append({"split": split, "file_path": f"{image_id}.jpg", "id": image_id})
            caps.append([original_caption(line, ents) for line in lines])
            karpathy.append({"filename": f"{image_id}.jpg", "imgid": k - 1,
                             "split": "restval" if split == "train" and k % 5 == 0 else split})
    for split, ids in splits.items():
        (ent_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    _dump(root / "detections_flickr.json", dets)
    _dump(root / "truth.json", truth)
    _dump(root / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": karpathy})
    counts: dict[str, int] = {}
    for entry in caps:
        for c in entry:
            for t in c["caption"]:
                counts[t] = counts.get(t, 0) + 1
    for entry in caps:                                  # the original wrote rare words as UNK
        for c in entry:
            c["caption"] = [t if counts[t] > 1 else "UNK" for t in c["caption"]]
    vocab = sorted(t for t, n in counts.items() if n > 1) + ["UNK"]
    classes = sorted(COLOURS) + ["person"]
    _dump(root / "original" / "dic_flickr30k.json", {
        "ix_to_word": {str(i + 1): w for i, w in enumerate(vocab)}, "wtod": {w: i for i, w in enumerate(classes)},
        "wtol": {w: w for w in vocab}, "images": dic_images})
    _dump(root / "original" / "cap_flickr30k.json", caps)
    return root


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
