"""Flickr30k's foreign formats, read in this one place and turned into grounded image records.

Flickr30k Entities (Plummer et al.; github.com/BryanPlummer/flickr30k_entities, whose README and
flickr30k_entities_utils.py define the formats):
  Sentences/<id>.txt    one caption a line, its phrases marked
                        [/EN#<chain id>/<type 1>/.../<type n> <word 1> ... <word n>]; phrases of one
                        coreference chain name one entity; chain 0 (type notvisual) was not annotated
  Annotations/<id>.xml  PASCAL VOC-like: <filename>, <size> (<width>, <height>), then <object>s, each
                        with one or more <name> (chain ids) and either a <bndbox> (xmin ymin xmax ymax,
                        1-based pixels, as the official reader reads them) or the flags <nobndbox> and
                        <scene> (the entity has no box: not visible, or the whole scene)
  train.txt val.txt test.txt    the image ids of each split, one a line

The original NBT's Flickr30k files (jiasenlu/NeuralBabyTalk prepro/prepro_dic_flickr.py, read by its
misc/dataloader_flickr30k.py):
  dic_flickr30k.json    ix_to_word, wtod, wtol, images[*] {split, file_path ("<id>.jpg"), id}
  cap_flickr30k.json    per image of the dic, a list of captions {caption: tokens (rare ones already
                        UNK), clss: the class-file word of each visual word, bbox: its box [x1, y1,
                        x2, y2] in image pixels, idx: its token position}; clss / bbox / idx are
                        parallel lists, one entry per box (a visual word with two boxes has two)

Both become `GroundedImage`s: the caption tokens, the visual words the captions ground (`Mention`:
token position, the entity it names, the class-file word) and each entity's boxes.
prepro/prepro_dic_flickr.py writes them as the project's own dic / cap / instances files, and
nothing after prepro knows they came from Flickr30k.

Which word of an Entities phrase is its visual word: the last class-file word (or plural) in it,
the phrase's head noun in English ("[a man 's arm]" names the arm, "[Two young guys]" the guys);
the other class-file words of a phrase are text. A phrase whose entity has no box (nobox, scene,
notvisual) grounds nothing.
"""
from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from nbt.misc.io import DataError, read_json
from nbt.misc.vocab import ClassNames, VisualWordMatcher, tokenize

Box = tuple[float, float, float, float]          # x1 y1 x2 y2, 0-based image pixels
PHRASE_START = re.compile(r"^\[/EN#([^/\s\]]+)((?:/[^/\s\]]+)+)$")      # [/EN#<id>/<type>[/<type>...]
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Phrase:
    first: int                    # index of its first word in the sentence's words
    end: int                      # one past its last word
    entity: str                   # coreference chain id ("0": not annotated)
    types: tuple[str, ...]        # people, clothing, bodyparts, animals, vehicles, instruments, scene, other, notvisual


@dataclass(frozen=True)
class EntitySentence:
    words: tuple[str, ...]        # the caption's words, markup removed
    phrases: tuple[Phrase, ...]


@dataclass(frozen=True)
class EntityAnnotation:
    filename: str
    width: int
    height: int
    boxes: dict[str, tuple[Box, ...]]     # chain id -> its boxes
    nobox: frozenset[str]                 # chain ids flagged nobndbox
    scene: frozenset[str]                 # chain ids flagged scene


@dataclass(frozen=True)
class Mention:
    pos: int                      # token position of the visual word
    entity: str                   # the entity it names
    word: str                     # the class-file word (singular) it is a form of


@dataclass
class GroundedImage:
    id: int
    file_path: str
    split: str
    size: tuple[int, int] | None                      # (width, height), None when unknown
    captions: list[list[str]] = field(default_factory=list)
    mentions: list[list[Mention]] = field(default_factory=list)     # per caption
    boxes: dict[str, list[Box]] = field(default_factory=dict)       # entity -> its boxes


# -- Flickr30k Entities ------------------------------------------------------------------------
def read_sentences(path: str | Path) -> list[EntitySentence]:
    """Sentences/<id>.txt -> one EntitySentence per non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            out.append(_parse_sentence(line, f"{path}:{lineno}"))
    return out


def _parse_sentence(line: str, where: str) -> EntitySentence:
    words: list[str] = []
    phrases: list[Phrase] = []
    open_phrase = None                                   # (first word, chain id, types)
    for token in line.split():
        if token.startswith("["):
            m = PHRASE_START.match(token)
            if m is None:
                raise DataError(f"{where}: '{token}' is not a phrase start [/EN#<chain id>/<type>...]")
            if open_phrase is not None:
                raise DataError(f"{where}: phrase '{token}' starts inside another phrase")
            open_phrase = (len(words), m.group(1), tuple(m.group(2)[1:].split("/")))
            continue
        closes = token.endswith("]")
        word = token[:-1] if closes else token
        if closes and open_phrase is None:
            raise DataError(f"{where}: ']' of '{token}' closes no phrase")
        if "[" in word or "]" in word or (closes and not word):
            raise DataError(f"{where}: stray bracket in '{token}'")
        words.append(word)
        if closes:
            first, entity, types = open_phrase
            phrases.append(Phrase(first, len(words), entity, types))
            open_phrase = None
    if open_phrase is not None:
        raise DataError(f"{where}: phrase [/EN#{open_phrase[1]}/... is not closed with ']'")
    return EntitySentence(tuple(words), tuple(phrases))


def read_annotation(path: str | Path) -> EntityAnnotation:
    """Annotations/<id>.xml -> its size, each chain's boxes (0-based pixels) and its nobox / scene flags."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{path}: not well-formed XML ({err})") from None
    width, height = (_int_field(root, f"size/{k}", path) for k in ("width", "height"))
    boxes: dict[str, list[Box]] = {}
    nobox, scene = set(), set()
    for k, obj in enumerate(root.findall("object")):
        names = [(n.text or "").strip() for n in obj.findall("name")]
        if not names or not all(names):
            raise DataError(f"{path}: object {k} has no <name> (the chain ids it belongs to)")
        bndbox = obj.find("bndbox")
        if bndbox is not None:
            x1, y1, x2, y2 = (_number(bndbox, tag, path, k) - 1 for tag in ("xmin", "ymin", "xmax", "ymax"))
            if not (x1 <= x2 and y1 <= y2):
                raise DataError(f"{path}: object {k} has xmax < xmin or ymax < ymin")
            for n in names:
                boxes.setdefault(n, []).append((x1, y1, x2, y2))
            continue
        flags = {tag: obj.find(tag) for tag in ("nobndbox", "scene")}
        if any(f is None for f in flags.values()):
            raise DataError(f"{path}: object {k} has neither <bndbox> nor <nobndbox> and <scene>")
        for tag, target in (("nobndbox", nobox), ("scene", scene)):
            if _number(obj, tag, path, k) > 0:
                target.update(names)
    filename = (root.findtext("filename") or "").strip() or f"{path.stem}.jpg"
    return EntityAnnotation(filename, width, height, {n: tuple(b) for n, b in boxes.items()},
                            frozenset(nobox), frozenset(scene))


def _number(node, tag: str, path: Path, k: int) -> float:
    text = node.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"{path}: object {k}: <{tag}> is {'missing' if text is None else repr(text)}, "
                        "not a number") from None


def _int_field(root, tag: str, path: Path) -> int:
    text = root.findtext(tag)
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise DataError(f"{path}: <{tag}> is {'missing' if text is None else repr(text)}, not a positive integer")
    return value


def read_id_list(path: str | Path) -> list[int]:
    """train.txt / val.txt / test.txt: one Flickr image id a line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            if not line.strip().isdigit():
                raise DataError(f"{path}:{lineno}: '{line.strip()[:40]}' is not an image id")
            ids.append(int(line))
    return ids


def read_karpathy_split(path: str | Path, entities_dir: str | Path) -> list[tuple[int, str]]:
    """Karpathy's dataset_flickr30k.json (the original's split source) -> [(Flickr image id, split)]
    in its order (`restval` is train), then the other images of Entities' Sentences/ as split
    'rest', as the original's prepro did."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a Karpathy split file (no 'images' list)")
    out = []
    for k, im in enumerate(data["images"]):
        try:
            stem, split = Path(str(im["filename"])).stem, str(im["split"])
            out.append((int(stem), "train" if split == "restval" else split))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: images[{k}] needs 'filename' (<Flickr id>.jpg) and 'split'") from None
    known = {i for i, _ in out}
    others = sorted(int(f.stem) for f in (Path(entities_dir) / "Sentences").glob("*.txt") if f.stem.isdigit())
    return out + [(i, "rest") for i in others if i not in known]


def split_lists(split_dir: str | Path) -> list[tuple[int, str]]:
    """Flickr30k Entities' train.txt, val.txt, test.txt -> [(image id, split)], in that order."""
    order, seen = [], {}
    for split in SPLITS:
        path = Path(split_dir) / f"{split}.txt"
        for i in read_id_list(path):
            if i in seen:
                raise DataError(f"{path}: image {i} is also in {seen[i]}.txt")
            seen[i] = split
            order.append((i, split))
    return order


def caption_tokens(sentence: EntitySentence) -> tuple[list[str], list[tuple[int, int]]]:
    """The project's tokens of an Entities sentence (lower-case, punctuation dropped, a word with
    other characters split as misc/vocab.tokenize splits raw captions) and each phrase's token span."""
    tokens: list[str] = []
    start = []                                          # word index -> its first token
    for w in sentence.words:
        start.append(len(tokens))
        tokens.extend([w.lower()] if w.isalnum() else tokenize(w) if any(ch.isalnum() for ch in w) else [])
    start.append(len(tokens))
    return tokens, [(start[p.first], start[p.end]) for p in sentence.phrases]


def entities_image(image_id: int, split: str, sentences: list[EntitySentence], ann: EntityAnnotation,
                   matcher: VisualWordMatcher) -> GroundedImage:
    """One image of Flickr30k Entities -> its GroundedImage (mentions: each boxed phrase's head word)."""
    im = GroundedImage(id=image_id, file_path=ann.filename, split=split, size=(ann.width, ann.height),
                       boxes={e: list(b) for e, b in ann.boxes.items()})
    fine_words = matcher.classes.fine_words
    for sentence in sentences:
        tokens, spans = caption_tokens(sentence)
        found = matcher.match(tokens)
        mentions = []
        for phrase, (a, b) in zip(sentence.phrases, spans):
            inside = [v for v in found if a <= v.pos and v.pos + v.length <= b]
            if inside and phrase.entity in ann.boxes:
                mentions.append(Mention(inside[-1].pos, phrase.entity, fine_words[inside[-1].fine]))
        im.captions.append(tokens)
        im.mentions.append(mentions)
    return im


def require_release(entities_dir: str | Path) -> Path:
    """The Entities folder, checked to hold the unzipped release's Sentences/ and Annotations/."""
    entities_dir = Path(entities_dir)
    for sub in ("Sentences", "Annotations"):
        if not (entities_dir / sub).is_dir():
            raise DataError(f"{entities_dir / sub}: folder not found (unzip Flickr30k Entities' annotations.zip "
                            f"into {entities_dir})")
    return entities_dir


def read_entities(entities_dir: str | Path, order: list[tuple[int, str]], matcher: VisualWordMatcher,
                  progress=lambda xs, **kw: xs) -> list[GroundedImage]:
    """The images of `order` [(image id, split)] with their Sentences and Annotations files."""
    entities_dir = require_release(entities_dir)
    return [entities_image(i, split, read_sentences(entities_dir / "Sentences" / f"{i}.txt"),
                           read_annotation(entities_dir / "Annotations" / f"{i}.xml"), matcher)
            for i, split in progress(order, desc="Flickr30k Entities", unit=" images")]


# -- the original NBT's files ------------------------------------------------------------------------
def read_original(dic_path: str | Path, cap_path: str | Path, classes: ClassNames,
                  image_path: str | Path | None = None) -> list[GroundedImage]:
    """The original's dic_flickr30k.json + cap_flickr30k.json -> GroundedImages, in the dic's order.
    An entity is a set of boxes: the entries of one caption at one token position are one visual
    word and its boxes, and visual words of an image with the same boxes name the same entity.
    Image sizes are read from the images' headers under `image_path` when they are there."""
    dic, caps = read_json(dic_path), read_json(cap_path)
    images = dic.get("images") if isinstance(dic, dict) else None
    if not isinstance(images, list):
        raise DataError(f"{dic_path}: no 'images' list (not the original's dic_flickr30k.json)")
    if not isinstance(caps, list) or len(caps) != len(images):
        raise DataError(f"{cap_path}: expected a list of {len(images)} caption lists (one per image of {dic_path})")
    word_class = classes.word_to_class()
    out = []
    for row, (info, entry) in enumerate(zip(images, caps)):
        try:
            image_id, file_path, split = int(info["id"]), str(info["file_path"]), str(info["split"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{dic_path}: images[{row}] needs 'id', 'file_path' and 'split'") from None
        im = GroundedImage(id=image_id, file_path=file_path, split=split,
                           size=_image_size(Path(image_path) / file_path) if image_path else None)
        if not isinstance(entry, list):
            raise DataError(f"{cap_path}: entry {row} is not a list of captions")
        entity_of: dict[frozenset, str] = {}
        for k, c in enumerate(entry):
            tokens, words = _original_caption(c, f"{cap_path}: entry {row}, caption {k}", word_class)
            mentions = []
            for pos, (word, boxes) in sorted(words.items()):
                key = frozenset(boxes)
                entity = entity_of.setdefault(key, str(len(entity_of) + 1))
                im.boxes.setdefault(entity, sorted(key))
                mentions.append(Mention(pos, entity, word))
            im.captions.append(tokens)
            im.mentions.append(mentions)
        out.append(im)
    return out


def _original_caption(c, where: str, word_class: dict[str, int]):
    """One caption {caption, clss, bbox, idx} -> (tokens, {position: (class-file word, [boxes])})."""
    if not isinstance(c, dict) or not all(k in c for k in ("caption", "clss", "bbox", "idx")):
        raise DataError(f"{where}: not a caption {{caption, clss, bbox, idx}}")
    tokens, clss, bbox, idx = c["caption"], c["clss"], c["bbox"], c["idx"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: 'caption' is not a list of tokens")
    if not all(isinstance(x, list) for x in (clss, bbox, idx)) or not len(clss) == len(bbox) == len(idx):
        raise DataError(f"{where}: 'clss', 'bbox' and 'idx' must be lists of one length")
    words: dict[int, tuple[str, list[Box]]] = {}
    for j, (name, box, pos) in enumerate(zip(clss, bbox, idx)):
        word = " ".join(str(name).lower().split())
        if word not in word_class:
            raise DataError(f"{where}: clss[{j}] '{name}' is not a word of the class-name file")
        if not isinstance(pos, int) or not 0 <= pos < len(tokens):
            raise DataError(f"{where}: idx[{j}] {pos!r} is not a token position of its caption")
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError):
            raise DataError(f"{where}: bbox[{j}] {str(box)[:40]} is not [x1, y1, x2, y2]") from None
        if not (x1 <= x2 and y1 <= y2):
            raise DataError(f"{where}: bbox[{j}] {box} has x2 < x1 or y2 < y1")
        if pos in words and words[pos][0] != word:
            raise DataError(f"{where}: idx {pos} has two class words, '{words[pos][0]}' and '{word}'")
        words.setdefault(pos, (word, []))[1].append((x1, y1, x2, y2))
    return [str(t) for t in tokens], words


def _image_size(path: Path) -> tuple[int, int] | None:
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        warnings.warn(f"{path}: not a readable image; its size is unknown")
        return None
