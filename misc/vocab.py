"""Vocabulary, class-name file, lemmas, plural forms and the caption-word -> category matcher.

Conventions (documented because the original's users tripped on them, issue #55):
- word ids: 0 is both BOS (input) and EOS (target); real words are 1..V-1, `UNK` is the last one;
- class indices are 1..C in class-file line order (0 is "no class"); COCO category ids are mapped to
  them by name, never used directly;
- fine-grained indices are 0..F-1 in class-file order (line by line, word by word).
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from misc.io import DataError


@dataclass(frozen=True)
class ClassNames:
    """The class-name file: one line per class, comma-separated; the first entry names the class."""
    names: tuple[str, ...]                    # class index - 1 -> class name
    words: tuple[tuple[str, ...], ...]        # class index - 1 -> its fine-grained words

    @staticmethod
    def read(path: str | Path) -> "ClassNames":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"class-name file not found: {path}")
        names, words, seen = [], [], {}
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            entries = [" ".join(w.strip().lower().split()) for w in line.split(",")]
            entries = [w for w in entries if w]
            if not entries:
                continue
            kept = []
            for w in entries:
                if w in seen:
                    warnings.warn(f"{path}:{lineno}: '{w}' already belongs to class "
                                  f"'{names[seen[w]]}'; kept there (the original let the last line win)")
                    continue
                seen[w] = len(names)
                kept.append(w)
            names.append(entries[0])
            words.append(tuple(kept))
        if not names:
            raise DataError(f"class-name file is empty: {path}")
        return ClassNames(tuple(names), tuple(words))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def fg_words(self) -> list[str]:
        return [w for line in self.words for w in line]

    def word_to_class(self) -> dict[str, int]:
        """fine-grained word -> class index 1..C."""
        return {w: c + 1 for c, line in enumerate(self.words) for w in line}

    def fg_class(self) -> list[int]:
        """fine-grained index -> class index 1..C."""
        return [c + 1 for c, line in enumerate(self.words) for _ in line]


@lru_cache(maxsize=1)
def _nlp():
    import spacy
    nlp = spacy.blank("en")
    try:
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()
    except (ValueError, OSError) as err:    # spacy-lookups-data missing
        raise DataError(f"spaCy lookup lemmatizer unavailable ({err}); pip install spacy-lookups-data") from None
    return nlp


def lemmatize(word: str) -> str:
    """Lemma of a single lower-case word (spaCy lookup tables; no Java, no model download)."""
    if " " in word:
        parts = word.split()
        return " ".join(parts[:-1] + [lemmatize(parts[-1])])
    return _lemma_cached(word)


@lru_cache(maxsize=200_000)
def _lemma_cached(word: str) -> str:
    doc = _nlp()(word)
    return doc[0].lemma_.lower() if len(doc) == 1 and doc[0].lemma_ else word


def pluralize(word: str) -> str:
    import inflect
    return _inflect(inflect).plural_noun(word) or word + "s"


@lru_cache(maxsize=1)
def _inflect(module):
    return module.engine()


@dataclass
class VisualWord:
    pos: int           # token position of the (first) word
    length: int        # 1 or 2 tokens
    cls: int           # class index 1..C
    plural: int        # 1 when the surface form is plural
    fg: int            # fine-grained index 0..F-1
    surface: str


class VisualWordMatcher:
    """Finds visual words in a token list: bigrams before unigrams (reference §1.3)."""

    def __init__(self, classes: ClassNames, wtol: dict[str, str] | None = None):
        self.classes = classes
        self.w2c = classes.word_to_class()
        self.fg_index = {w: i for i, w in enumerate(classes.fg_words)}
        self.wtol = dict(wtol or {})

    def lemma(self, token: str) -> str:
        if token not in self.wtol:
            self.wtol[token] = lemmatize(token)
        return self.wtol[token]

    def match(self, tokens: list[str], present: set[int] | None = None) -> list[VisualWord]:
        """Visual words of `tokens`; with `present`, only classes among the image's GT classes."""
        lemmas = [self.lemma(t) for t in tokens]
        claimed = [False] * len(tokens)
        found: list[VisualWord] = []
        for n in (2, 1):
            for i in range(len(tokens) - n + 1):
                if any(claimed[i:i + n]):
                    continue
                key = " ".join(lemmas[i:i + n])
                surface = " ".join(tokens[i:i + n])
                if key not in self.w2c:
                    if surface in self.w2c:      # lemmatizer changed a class word ("dress" -> "dres")
                        key = surface
                    else:
                        continue
                cls = self.w2c[key]
                if present is not None and cls not in present:
                    continue
                claimed[i:i + n] = [True] * n
                found.append(VisualWord(i, n, cls, int(surface != key), self.fg_index[key], surface))
        return sorted(found, key=lambda v: v.pos)

    def mentioned_classes(self, captions: list[list[str]], present: set[int] | None = None) -> set[int]:
        return {v.cls for toks in captions for v in self.match(toks, present)}


class Vocabulary:
    """Word ids (0 = BOS/EOS, 1..V-1 words, UNK last) and fine-grained surface forms."""

    def __init__(self, ix_to_word: dict[str, str], classes: ClassNames,
                 plural_of: dict[str, str] | None = None):
        self.ix_to_word = {int(k): v for k, v in ix_to_word.items()}
        self.word_to_ix = {v: k for k, v in self.ix_to_word.items()}
        if "UNK" not in self.word_to_ix:
            raise DataError("vocabulary has no 'UNK' entry")
        self.classes = classes
        self.plural_of = dict(plural_of or {})

    @property
    def size(self) -> int:
        """Textual output size: words 1..V-1 plus EOS at 0."""
        return max(self.ix_to_word) + 1

    def encode(self, token: str) -> int:
        return self.word_to_ix.get(token, self.word_to_ix["UNK"])

    def word(self, ix: int) -> str:
        return self.ix_to_word.get(int(ix), "UNK")

    def plural(self, word: str) -> str:
        if word not in self.plural_of:
            self.plural_of[word] = pluralize(word)
        return self.plural_of[word]

    def singular(self, surface: str) -> str:
        """Fine-grained word of a rendered slot ("rings" -> "ring")."""
        if not hasattr(self, "_singular"):
            self._singular = {}
            for w in self.classes.fg_words:
                self._singular[self.plural(w)] = w
            for w in self.classes.fg_words:
                self._singular[w] = w
        return self._singular.get(surface, surface)

    def fingerprint(self) -> str:
        """Hash of the word ids and the class list: a checkpoint only fits data with the same one."""
        payload = json.dumps([sorted(self.ix_to_word.items()), self.classes.words])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_vocab(captions: list[list[str]], threshold: int) -> dict[str, str]:
    """Words seen more than `threshold` times, most frequent first, ties alphabetical; UNK last."""
    counts = Counter(t for toks in captions for t in toks)
    words = sorted((w for w, c in counts.items() if c > threshold), key=lambda w: (-counts[w], w))
    words.append("UNK")
    return {str(i + 1): w for i, w in enumerate(words)}


def plural_forms(captions: list[list[str]], classes: ClassNames, matcher: VisualWordMatcher) -> dict[str, str]:
    """Singular fine-grained word -> plural surface form, from the corpus, then inflect."""
    seen: dict[str, Counter] = {}
    for toks in captions:
        for v in matcher.match(toks):
            if v.plural:
                key = classes.fg_words[v.fg]
                seen.setdefault(key, Counter())[v.surface] += 1
    out = {}
    for w in classes.fg_words:
        out[w] = seen[w].most_common(1)[0][0] if w in seen else pluralize(w)
    return out
