"""Vocabulary, class-name file, the singular <-> plural relation of its words, and the
caption-word -> category matcher.

Conventions (documented because the original's users tripped on them, issue #55):
- word ids: 0 is both BOS (input) and EOS (target); real words are 1..V-1, `UNK` is the last one;
- class indices are 1..C in class-file line order (0 is "no class"); COCO category ids are mapped to
  them by name, never used directly;
- fine-grained indices are 0..F-1 in class-file order (line by line, word by word).

A caption token (or two-token name) is a visual word when it is a class-file word or one of its
plural forms (misc.plurals: explicit English rules, no lemmatizer). Matching, the plural flag of
the training targets, the rendering of a slot (Vocabulary.plural) and its reading back
(Vocabulary.singular) all use this one relation, `WordForms`.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from nbt.misc.io import DataError
from nbt.misc.plurals import is_plural_noun, number_from_context, plurals


def tokenize(text: str) -> list[str]:
    """A raw caption -> lower-case tokens by spaCy's English tokenizer rules (no model is loaded):
    punctuation and spaces dropped, a possessive split off ("a man's hat" -> a man 's hat, so
    that "man" can be a visual word), numbers such as 8:25 or 3.5 kept whole. Only the
    tokenizer's exceptions written with an apostrophe are kept: its apostrophe-less ones split
    caption words ("id" -> i d, "cant" -> ca nt)."""
    return [t.text for t in _tokenizer()(text.lower()) if not (t.is_punct or t.is_space)]


@lru_cache(maxsize=1)
def _tokenizer():
    import spacy
    tok = spacy.blank("en").tokenizer
    tok.rules = {k: v for k, v in tok.rules.items() if "'" in k or "\u2019" in k}
    return tok


@dataclass(frozen=True)
class ClassNames:
    """The class-name file: one line per class, comma-separated; the first entry names the class.

    A word listed under two classes (the original's COCO file: surfboard under boat and surfboard,
    cattle and ewe under sheep and cow, recliner under chair and couch) goes where the original's
    prepro put it: to the last line that lists it, except that a class's own name always stays
    with its class. One line per file says how each was resolved."""
    names: tuple[str, ...]                    # class index - 1 -> class name
    words: tuple[tuple[str, ...], ...]        # class index - 1 -> its fine-grained words

    @staticmethod
    def read(path: str | Path) -> "ClassNames":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"class-name file not found: {path}")
        lines = []                 # (line number, entries once each, in the line's order)
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            entries = [" ".join(w.strip().lower().split()) for w in line.split(",")]
            entries = list(dict.fromkeys(w for w in entries if w))      # repeats on a line: kept once
            if entries:
                lines.append((lineno, entries))
        if not lines:
            raise DataError(f"class-name file is empty: {path}")
        owner = _owners(path, lines)
        names = tuple(entries[0] for _, entries in lines)
        words = tuple(tuple(w for w in entries if owner[w] == c) for c, (_, entries) in enumerate(lines))
        _announce_duplicates(path, lines, owner, names)
        return ClassNames(names, words)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The class index 1..C of a class name (0 is padding everywhere)."""
        return self.names.index(name) + 1

    @property
    def fine_words(self) -> list[str]:
        return [w for line in self.words for w in line]

    def word_to_class(self) -> dict[str, int]:
        """fine-grained word -> class index 1..C."""
        return {w: c + 1 for c, line in enumerate(self.words) for w in line}

    def fine_class(self) -> list[int]:
        """fine-grained index -> class index 1..C."""
        return [c + 1 for c, line in enumerate(self.words) for _ in line]

    @cached_property
    def forms(self) -> "WordForms":
        """The singular <-> plural relation of the file's words (built once)."""
        return WordForms(self)


def _owners(path: Path, lines: list[tuple[int, list[str]]]) -> dict[str, int]:
    """word -> the class (0-based line) it belongs to: its own class for a class name, else the
    last line that lists it (the original's `wtod[w] = i` over the lines)."""
    owner: dict[str, int] = {}
    named: dict[str, int] = {}
    for c, (lineno, entries) in enumerate(lines):
        if entries[0] in named:
            raise DataError(f"{path}:{lineno}: class '{entries[0]}' is named twice "
                            f"(also on line {lines[named[entries[0]]][0]})")
        named[entries[0]] = c
        for w in entries:
            owner[w] = c
    return {**owner, **named}


_announced: set[str] = set()


def _announce_duplicates(path: Path, lines, owner: dict[str, int], names: tuple[str, ...]) -> None:
    """One line per class-name file (once per process) for its words listed under several classes."""
    listed: dict[str, int] = {}
    for _, entries in lines:
        for w in entries:
            listed[w] = listed.get(w, 0) + 1
    shared = [w for w in dict.fromkeys(w for _, entries in lines for w in entries) if listed[w] > 1]
    key = str(path.resolve())
    if not shared or key in _announced:
        return
    _announced.add(key)
    how = ", ".join(f"{w}\u2192{names[owner[w]]}" + (" (its own class)" if names[owner[w]] == w else "")
                    for w in shared)
    words = f"{len(shared)} word{'s' if len(shared) > 1 else ''}"
    print(f"note: {path.name}: {words} listed under more than one class, resolved as the original did "
          f"(the last line wins; a class's own name stays with its class): {how}", file=sys.stderr)


@dataclass
class VisualWord:
    pos: int           # token position of the (first) word
    length: int        # 1 or 2 tokens
    cls: int           # class index 1..C
    plural: int        # 1 when the surface form is plural
    fine: int          # fine-grained index 0..F-1 (of the singular word: "people" -> "person")
    surface: str


@dataclass(frozen=True)
class Form:
    """What a caption surface form is: a form of class-file word `word`, singular (0), plural (1)
    or either (-1: an invariant noun, "sheep", whose number the context tells)."""
    word: str
    number: int


class WordForms:
    """The singular <-> plural relation of every class-file word (misc.plurals gives the English).

    For each line of the class file: an entry that is a plural form of another entry of its line
    (people / person, children / child, skis / ski, oxen / ox) is an alias: its tokens are that
    word in the plural. Every other entry w is a word of its own: `w` is its singular surface and
    each of plurals(w) a plural one, except that an entry already plural by itself (cattle, a
    lone "lemons") is only ever plural. An entry's own surface wins over another's plural form.
    """

    def __init__(self, classes: "ClassNames"):
        self.plurals: dict[str, tuple[str, ...]] = {}     # fine-grained word -> plural forms, preferred first
        self.surface: dict[str, Form] = {}                # caption surface (1 or 2 tokens) -> its form
        self.alias: dict[str, str] = {}                   # alias entry -> the entry it is the plural of
        for line in classes.words:
            for w in line:
                of = [s for s in line if s != w and not is_plural_noun(s) and w in plurals(s)]
                if of:
                    self.alias[w] = of[0]
        plural_of_entry = []
        for w in classes.fine_words:
            if w in self.alias:
                self.plurals[w] = (w,)
            elif is_plural_noun(w):
                self.plurals[w] = (w,)
                self.surface.setdefault(w, Form(w, 1))
            else:
                self.plurals[w] = plurals(w)
                self.surface.setdefault(w, Form(w, -1 if w in self.plurals[w] else 0))
                plural_of_entry += [(p, w) for p in self.plurals[w] if p != w]
        for p, w in plural_of_entry:
            self.surface.setdefault(p, Form(w, 1))
        for a, w in self.alias.items():                   # an alias is the plural of its word
            self.surface[a] = Form(w, 1)

    def singular(self, surface: str) -> str:
        """The class-file word a surface form belongs to ("rings" -> "ring", "people" -> "person")."""
        f = self.surface.get(surface)
        return f.word if f is not None else surface


class VisualWordMatcher:
    """Finds visual words in a token list: bigrams before unigrams ("teddy bear" is one visual word, not "bear"), by surface
    form through `WordForms` (no lemmas: "skiing", "tied", "bedding" are text)."""

    def __init__(self, classes: ClassNames):
        self.classes = classes
        self.forms = classes.forms
        self.w2c = classes.word_to_class()
        self.fine_index = {w: i for i, w in enumerate(classes.fine_words)}
        surfaces = self.forms.surface
        self._unigrams = {s: f for s, f in surfaces.items() if " " not in s}
        self._bigrams = {tuple(s.split()): f for s, f in surfaces.items() if len(s.split()) == 2}
        self._starts = frozenset(self._unigrams) | {a for a, _ in self._bigrams}

    def match(self, tokens: list[str], present: set[int] | None = None) -> list[VisualWord]:
        """Visual words of `tokens`; with `present`, only classes among the image's GT classes.
        A left-to-right scan trying the bigram first at each position claims what the two passes
        of the original (all bigrams, then unigrams) claim."""
        if self._starts.isdisjoint(tokens):
            return []
        found: list[VisualWord] = []
        i, n = 0, len(tokens)
        while i < n:
            for length in (2, 1):
                if i + length > n:
                    continue
                form = self._bigrams.get((tokens[i], tokens[i + 1])) if length == 2 else \
                    self._unigrams.get(tokens[i])
                if form is None:
                    continue
                cls = self.w2c[form.word]
                if present is not None and cls not in present:
                    continue
                number = form.number if form.number >= 0 else \
                    number_from_context(tokens, i, i + length, form.word)
                found.append(VisualWord(i, length, cls, number, self.fine_index[form.word],
                                        " ".join(tokens[i:i + length])))
                i += length - 1
                break
            i += 1
        return found

    def mentioned_classes(self, captions: list[list[str]], present: set[int] | None = None) -> set[int]:
        return {v.cls for toks in captions for v in self.match(toks, present)}


class Vocabulary:
    """Word ids (0 = BOS/EOS, 1..V-1 words, UNK last) and fine-grained surface forms."""

    def __init__(self, ix_to_word: dict[str, str], classes: ClassNames,
                 plural_of: dict[str, str] | None = None, language=None, agreement: dict[str, str] | None = None):
        self.ix_to_word = {int(k): v for k, v in ix_to_word.items()}
        if not self.ix_to_word:
            raise DataError("the vocabulary (ix_to_word) is empty")
        if "UNK" not in self.ix_to_word.values():
            # The original's prepro writes no UNK when no training word falls under the threshold:
            # its captions have none, and any other word is read as this appended, last id.
            self.ix_to_word[max(self.ix_to_word) + 1] = "UNK"
        self.word_to_ix = {v: k for k, v in self.ix_to_word.items()}
        self.classes = classes
        # fine-grained word -> the corpus's plural form (a dic's `plural_of`; entries that are not
        # a plural of their word, as older files have - "ski": "skiing" - are not used)
        self.plural_of = dict(plural_of or {})
        self.language = language        # misc.language.Language of the dic (None: English)
        self.agreement = dict(agreement or {})    # a dic's `agreement` (Language.agree): 星星 -> 颗

    @property
    def size(self) -> int:
        """Textual output size: words 1..V-1 plus EOS at 0."""
        return max(self.ix_to_word) + 1

    def encode(self, token: str) -> int:
        return self.word_to_ix.get(token, self.word_to_ix["UNK"])

    def word(self, ix: int) -> str:
        return self.ix_to_word.get(int(ix), "UNK")

    def plural(self, word: str) -> str:
        """The plural to render for a class-file word: the corpus's form when it is one of the
        word's plural forms, else the preferred one ("person" -> "people", "skis" -> "skis")."""
        forms = self.classes.forms.plurals.get(word)
        if forms is None:                                  # not a class-file word
            return word if is_plural_noun(word) else plurals(word)[0]
        chosen = self.plural_of.get(word)
        return chosen if chosen in forms else forms[0]

    def singular(self, surface: str) -> str:
        """Fine-grained word of a rendered slot ("rings" -> "ring", "people" -> "person")."""
        return self.classes.forms.singular(surface)

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
    """Fine-grained word -> the plural to render: its most frequent plural form in the captions
    (people / persons, buses / busses), else the preferred one."""
    seen: dict[str, Counter] = {}
    for toks in captions:
        for v in matcher.match(toks):
            if v.plural:
                seen.setdefault(classes.fine_words[v.fine], Counter())[v.surface] += 1
    out = {}
    for w in classes.fine_words:
        forms = classes.forms.plurals[w]
        counts = seen.get(w, Counter())
        # most frequent, ties by the preferred order
        out[w] = max(forms, key=lambda p: (counts[p], -forms.index(p)))
    return out


def word_to_lemma(tokens: set[str], classes: ClassNames) -> dict[str, str]:
    """The dic's `wtol` (the original's format: its loader matches `wtod[wtol[token]]` and calls a
    token plural when the two differ): a plural form of a class-file word -> that word, also the
    last word of a two-word name ("bears" -> "bear" for "teddy bears"); every other token -> itself."""
    last: dict[str, str] = {}
    for surface, form in classes.forms.surface.items():
        if form.number == 1 and surface != form.word:
            if " " not in surface:
                last[surface] = form.word
            elif surface.split()[:-1] == form.word.split()[:-1]:
                last.setdefault(surface.split()[-1], form.word.split()[-1])
    return {t: last.get(t, t) for t in sorted(tokens)}
