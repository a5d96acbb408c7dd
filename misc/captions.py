"""The image records and captions that DataLoader workers read, as flat numpy arrays.

A forked worker shares its parent's memory until a page is written, and reading a Python object
writes to it (its reference count; the cyclic GC writes the header of every container it scans).
With the captions as lists of strings, a worker that read every caption once held its own copy of
them (hundreds of MB at COCO size: benchmarks/README.md, "COCO at full size"). Here nothing a worker reads per item is a Python object:

    caption c        tokens[cap_start[c] : cap_start[c + 1]]   indices into `words` (distinct tokens)
    image row r      captions img_start[r] .. img_start[r + 1] - 1
    visual words     visual[vw_start[c] : vw_start[c + 1]]      rows (pos, length, cls, plural, fine, ref)
    word ids         word_ids[token index]                       vocabulary id (UNK when unknown)

A caption of the cap file is a token list, or a grounded caption {"tokens": [...], "refs": [[pos,
entity], ...]} (converted Flickr30k Entities: prepro/prepro_dic_flickr.py): the visual word that
starts at token `pos` names the object `entity` of the instance annotations (misc/annotations.py),
and its pointer's positives are that object's boxes (ref = its entity code). In a grounded caption
only the visual words its refs name are visual words; the others are text.

The visual words are matched once per caption, against the classes P of all its image's GT boxes,
and kept in a cache next to the dic (misc/npz_cache.py), so workers do not run the matcher. A
random crop can leave a subset P' of P. Matching claims n-grams greedily and a class filter only
removes candidates, so when every class the match over P claimed is in P', matching over P'
claims the same n-grams: the cached row is used. Otherwise (a crop removed a mentioned class) the
loader matches that caption again (CaptionDataset; tested against live matching). A grounded
caption's rows are used as they are: a word whose object the crop removed has no positive left.
"""
from __future__ import annotations

import hashlib
import inspect
import sys
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from nbt.misc import npz_cache
from nbt.misc.io import DataError

CACHE_VERSION = 2
VW_COLUMNS = ("pos", "length", "cls", "plural", "fine", "ref")


class ImageTable(Sequence):
    """dic["images"] as arrays: record i is {"split", "file_path", "id"} built on access."""

    def __init__(self, ids: np.ndarray, split_code: np.ndarray, split_names: list[str],
                 path_bytes: np.ndarray, path_start: np.ndarray):
        self.ids, self.split_code, self.split_names = ids, split_code, list(split_names)
        self.path_bytes, self.path_start = path_bytes, path_start

    @staticmethod
    def from_records(images: list, where: str = "dic") -> "ImageTable":
        try:
            ids = np.array([int(im["id"]) for im in images], np.int64)
            splits = [str(im["split"]) for im in images]
            paths = [str(im["file_path"]).encode() for im in images]
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: every images[*] entry needs 'id', 'split' and 'file_path'") from None
        names = sorted(set(splits))
        code = {n: i for i, n in enumerate(names)}
        start = np.zeros(len(paths) + 1, np.int64)
        np.cumsum([len(p) for p in paths], out=start[1:])
        blob = np.frombuffer(b"".join(paths), np.uint8)
        return ImageTable(ids, np.array([code[s] for s in splits], np.int16), names, blob, start)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return {"split": self.split(i), "file_path": self.file_path(i), "id": self.image_id(i)}

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def image_id(self, i: int) -> int:
        return int(self.ids[i])

    def split(self, i: int) -> str:
        return self.split_names[self.split_code[i]]

    def file_path(self, i: int) -> str:
        i = int(i) % len(self)
        return self.path_bytes[self.path_start[i]:self.path_start[i + 1]].tobytes().decode()

    def rows(self, split: str) -> np.ndarray:
        if split not in self.split_names:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.split_code == self.split_names.index(split))


class CaptionStore:
    """Tokenised captions per image row, with their visual words; `store[row]` gives the token
    lists, and `store[row] = caps` replaces a row in memory (such rows are matched live)."""

    def __init__(self, words: np.ndarray, tokens: np.ndarray, cap_start: np.ndarray,
                 img_start: np.ndarray, visual: np.ndarray, vw_start: np.ndarray):
        self.words = words              # (W,) str   every distinct token
        self.tokens = tokens            # (T,) int32 token indices, all captions end to end
        self.cap_start = cap_start      # (C + 1,)   first token of each caption
        self.img_start = img_start      # (I + 1,)   first caption of each image row
        self.visual = visual            # (M, 6) int32 pos, length, cls, plural, fine, ref (-1 none)
        self.vw_start = vw_start        # (C + 1,)   first visual word of each caption
        self.word_ids = np.zeros(len(words), np.int64)    # vocabulary ids, set by bind_vocab
        self.replaced: dict[int, list[list[str]]] = {}

    # -- building --------------------------------------------------------------------------------
    @staticmethod
    def build(captions: list, match: Callable[[int, list[str]], list], where: str = "captions",
              entity_code: Callable[[str], int] = lambda name: -1) -> "CaptionStore":
        """captions[row] = list of captions (token lists or grounded captions); match(row, tokens)
        -> VisualWord list; entity_code(entity name) -> its code, -1 for an entity without boxes."""
        index: dict[str, int] = {}
        tokens: list[int] = []
        cap_start, img_start, vw_start, visual = [0], [0], [0], []
        for row, caps in enumerate(captions):
            if not isinstance(caps, list):
                raise DataError(f"{where}: entry {row} is not a list of captions{_original_flickr_hint(caps)}")
            for k, c in enumerate(caps):
                toks, refs = _caption_record(c, f"{where}: entry {row}, caption {k}")
                tokens.extend(index.setdefault(str(t), len(index)) for t in toks)
                cap_start.append(len(tokens))
                found = match(row, toks)
                if refs is None:
                    visual.extend((v.pos, v.length, v.cls, v.plural, v.fine, -1) for v in found)
                else:       # a grounded caption: the words its refs name, each with its object
                    codes = {pos: entity_code(name) for pos, name in refs}
                    visual.extend((v.pos, v.length, v.cls, v.plural, v.fine, codes[v.pos]) for v in found
                                  if codes.get(v.pos, -1) >= 0)
                vw_start.append(len(visual))
            img_start.append(len(cap_start) - 1)
        words = np.array(list(index), dtype=str) if index else np.zeros(0, "<U1")
        return CaptionStore(words, np.array(tokens, np.int32), np.array(cap_start, np.int64),
                            np.array(img_start, np.int64),
                            np.array(visual, np.int32).reshape(-1, len(VW_COLUMNS)), np.array(vw_start, np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"words": self.words, "tokens": self.tokens, "cap_start": self.cap_start,
                "img_start": self.img_start, "visual": self.visual, "vw_start": self.vw_start}

    @staticmethod
    def from_arrays(a: dict[str, np.ndarray]) -> "CaptionStore":
        return CaptionStore(a["words"], a["tokens"], a["cap_start"], a["img_start"], a["visual"], a["vw_start"])

    def bind_vocab(self, encode: Callable[[str], int]) -> None:
        self.word_ids = np.array([encode(w) for w in self.words.tolist()], np.int64)

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.img_start) - 1

    def __getitem__(self, row: int) -> list[list[str]]:
        row = int(row)
        if row in self.replaced:
            return self.replaced[row]
        if not 0 <= row < len(self):
            raise IndexError(row)
        return [self.text(c) for c in range(self.img_start[row], self.img_start[row + 1])]

    def __setitem__(self, row: int, caps: list[list[str]]) -> None:
        self.replaced[int(row)] = [list(c) for c in caps]

    def __iter__(self):
        return (self[r] for r in range(len(self)))

    def captions_of(self, row: int) -> np.ndarray:
        """Caption indices of an image row, empty captions left out."""
        c = np.arange(self.img_start[row], self.img_start[row + 1])
        return c[self.cap_start[c + 1] > self.cap_start[c]]

    def token_index(self, c: int) -> np.ndarray:
        return self.tokens[self.cap_start[c]:self.cap_start[c + 1]]

    def text(self, c: int) -> list[str]:
        return self.words[self.token_index(c)].tolist()

    def visual_words(self, c: int) -> np.ndarray:
        """(n, 6) pos, length, cls, plural, fine, ref of caption c, matched against its image's GT
        classes (ref: the entity code a grounded caption names, -1 none)."""
        return self.visual[self.vw_start[c]:self.vw_start[c + 1]]


def matcher_version(matcher) -> str:
    """Hash of the matcher's sources (`matcher_sources`): a changed matcher invalidates the cache."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in matcher_sources(matcher))).hexdigest()[:16]


def matcher_sources(matcher) -> list[Path]:
    """The source files of the matcher's module and of the project's misc modules it takes names
    from (the plural relation, the number cues)."""
    module = sys.modules[type(matcher).__module__]
    names = {module.__name__} | {getattr(v, "__module__", "") or "" for v in vars(module).values()}
    ours = [n for n in names if n.startswith(("nbt.misc.", "misc.")) and n in sys.modules]
    return sorted(Path(inspect.getfile(sys.modules[n])) for n in ours)


def load_captions(cap_path: str | Path, images: ImageTable, present: Callable[[int], set[int]],
                  matcher, *, cache: str | Path | None, key_parts: dict,
                  entity_code: Callable[[str], int] = lambda name: -1) -> CaptionStore:
    """cap_*.json -> CaptionStore, visual words matched against present(image id), grounded
    captions' refs resolved by entity_code; through the .npz cache at `cache` (key: the caption
    file, `key_parts`, which must name the boxes' files, and the matcher's source)."""
    key = json.dumps({"version": CACHE_VERSION, "captions": npz_cache.file_stamp(cap_path),
                      "matcher": matcher_version(matcher), **key_parts}, sort_keys=True)
    arrays = npz_cache.load(cache, key) if cache is not None else None
    if arrays is not None and len(arrays["img_start"]) == len(images) + 1:
        return CaptionStore.from_arrays(arrays)
    from nbt.misc.io import read_json
    caps = read_json(cap_path)
    if not isinstance(caps, list) or len(caps) != len(images):
        raise DataError(f"{cap_path}: expected a list of {len(images)} caption lists")
    classes: dict[int, set[int]] = {}

    def match(row: int, tokens: list[str]) -> list:
        if row not in classes:
            classes.clear()
            classes[row] = present(images.image_id(row))
        return matcher.match(tokens, classes[row])
    store = CaptionStore.build(caps, match, str(cap_path), entity_code)
    del caps
    if cache is not None:
        npz_cache.save(cache, key, store.arrays())
    return store


def _caption_record(c, where: str) -> tuple[list, list | None]:
    """A caption of the cap file -> (tokens, refs [(pos, entity name)] or None for a plain caption)."""
    if isinstance(c, list):
        return c, None
    if not isinstance(c, dict) or not isinstance(c.get("tokens"), list):
        raise DataError(f"{where}: not a token list nor a grounded caption {{\"tokens\": [...], \"refs\": "
                        f"[[pos, entity], ...]}}{_original_flickr_hint(c)}")
    refs = c.get("refs", [])
    if not isinstance(refs, list) or not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], int) and 0 <= r[0] < len(c["tokens"])
            for r in refs):
        raise DataError(f"{where}: 'refs' must be [[token position, entity], ...] within its tokens")
    return c["tokens"], [(r[0], str(r[1])) for r in refs]


def _original_flickr_hint(entry) -> str:
    """What to do with the original's Flickr30k caption file ({caption, clss, bbox, idx} per caption)."""
    first = entry[0] if isinstance(entry, list) and entry else entry
    if isinstance(first, dict) and {"caption", "clss", "bbox", "idx"} <= set(first):
        return (" (this is the original's Flickr30k caption format: convert it with "
                "prepro/prepro_dic_flickr.py --original_dic ... --original_cap ...)")
    return ""
