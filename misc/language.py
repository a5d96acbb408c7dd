"""The caption language, behind one small interface; English and Chinese are its implementations.

    segment(raw caption)            -> tokens              prepro, the metrics of raw text
    matcher.match(tokens, present)  -> visual words with their number (VisualWord.plural)
    render(vocab, word, plural)     -> the slot's surface  ("ring" / "rings"; 圆环 either way)
    number_said(tokens, i, plural)  -> the number the caption states for its slot at token i
    join(tokens)                    -> the caption as text ("two red rings"; 两个红色的圆环)
    agreement(captions)             -> what a slot's word imposes on its phrase, learned at prepro
                                       (the dic's `agreement`; English: nothing, Chinese: the
                                       measure word each noun is counted with)
    template(tokens, vocab)         -> a caption as the decoder's training target says it: the
                                       words that agree with a noun in their neutral form
                                       (两颗星星 -> 两个星星; English: unchanged)
    agree(tokens, vocab)            -> a filled caption made to agree with its nouns
                                       (两个[星星] -> 两颗星星; English: unchanged)

A data set's language is the `language` key of its dic (English when absent: files written before
languages existed); `language_for(code, classes)` builds it for a class file. Nothing downstream
asks which language it has: prepro, the loader, the targets, slot filling, the metrics, SCST and
the demo call these methods.

English is today's code, unchanged: spaCy's English tokenizer rules (misc.vocab.tokenize), the
plural relation of misc.plurals through VisualWordMatcher, the corpus's plural forms. The number
it states is its plural head's choice, which the rendered word shows.

Chinese (misc.chinese): jieba through spaCy, with the class words kept whole; nouns do not
inflect, so a slot renders the same word whatever the plural head says; the number the caption
states is read from its numeral / measure-word / quantifier cues (两只狗, 一群羊, 一些), the same
cues that gave the plural head its training targets. Attribute words may reach their noun through
的 (红色的圆环), `modifier_links`.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from nbt.misc.chinese import (ChineseForms, ChineseMatcher, ChineseSegmenter, agree_measures, measure_words,
                              neutral_measures, number_before)
from nbt.misc.io import DataError
from nbt.misc.vocab import ClassNames, VisualWordMatcher, Vocabulary, plural_forms, tokenize, word_to_lemma


class Language:
    """The interface (module docstring); one instance per language and class file."""
    code = ""
    name = ""
    modifier_links: frozenset[str] = frozenset()       # tokens between an attribute word and its noun

    def __init__(self, classes: ClassNames | None = None):
        self.classes = classes

    def segment(self, text: str) -> list[str]:
        raise NotImplementedError

    @cached_property
    def matcher(self):
        raise NotImplementedError

    @property
    def forms(self):
        """The singular <-> plural relation of the class-file words (WordForms' interface)."""
        raise NotImplementedError

    def join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def render(self, vocab: Vocabulary, word: str, plural: int) -> str:
        raise NotImplementedError

    def number_said(self, tokens: list[str], position: int, plural: int) -> int:
        raise NotImplementedError

    def plural_of(self, captions: list[list[str]]) -> dict[str, str]:
        """Fine-grained word -> the form a plural slot renders (the dic's `plural_of`)."""
        raise NotImplementedError

    def agreement(self, captions: list[list[str]]) -> dict[str, str]:
        """The dic's `agreement`: class-file word -> what its phrase says with it (see `agree`)."""
        raise NotImplementedError

    def template(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        """A training caption's tokens -> the decoder's target: the words that depend on a noun
        (vocab.agreement) in their neutral form, so the template does not choose the noun."""
        raise NotImplementedError

    def agree(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        """A filled caption's tokens -> the same with the words that depend on a noun made to
        agree with it (vocab.agreement)."""
        raise NotImplementedError

    def word_to_lemma(self, tokens: set[str]) -> dict[str, str]:
        """The dic's `wtol` (the original's format): surface token -> class-file word."""
        raise NotImplementedError

    @property
    def metric_segmenter(self) -> Callable[[str], list[str]] | None:
        """How the metrics split a caption into tokens: None = coco-caption's PTB tokenizer."""
        raise NotImplementedError


class English(Language):
    code, name = "en", "English"

    def segment(self, text: str) -> list[str]:
        return tokenize(text)

    @cached_property
    def matcher(self) -> VisualWordMatcher:
        return VisualWordMatcher(self.classes)

    @property
    def forms(self):
        return self.classes.forms

    def join(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def render(self, vocab: Vocabulary, word: str, plural: int) -> str:
        return vocab.plural(word) if plural else word

    def number_said(self, tokens: list[str], position: int, plural: int) -> int:
        return int(plural)                               # the rendered form shows it

    def plural_of(self, captions: list[list[str]]) -> dict[str, str]:
        return plural_forms(captions, self.classes, self.matcher)

    def agreement(self, captions: list[list[str]]) -> dict[str, str]:
        return {}                                        # a slot's ending is its own (render)

    def template(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        return tokens

    def agree(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        return tokens

    def word_to_lemma(self, tokens: set[str]) -> dict[str, str]:
        return word_to_lemma(tokens, self.classes)

    @property
    def metric_segmenter(self) -> None:
        return None


class Chinese(Language):
    code, name = "zh", "中文"
    modifier_links = frozenset({"的"})

    @cached_property
    def segmenter(self) -> ChineseSegmenter:
        return ChineseSegmenter(self.classes.fine_words + list(self.classes.names) if self.classes else ())

    def segment(self, text: str) -> list[str]:
        return self.segmenter(text)

    @cached_property
    def matcher(self) -> ChineseMatcher:
        return ChineseMatcher(self.classes)

    @cached_property
    def forms(self) -> ChineseForms:
        return ChineseForms(tuple(self.classes.fine_words))

    def join(self, tokens: list[str]) -> str:
        """Chinese is written without spaces, except between two Latin / digit tokens (3 个 -> 3个)."""
        out = ""
        for t in tokens:
            if out and out[-1].isascii() and out[-1].isalnum() and t[:1].isascii() and t[:1].isalnum():
                out += " "
            out += t
        return out

    def render(self, vocab: Vocabulary, word: str, plural: int) -> str:
        return word

    def number_said(self, tokens: list[str], position: int, plural: int) -> int:
        visual = {i for i, t in enumerate(tokens) if t in self.matcher.w2c}
        return number_before(tokens, position, position + 1, visual.__contains__)

    def plural_of(self, captions: list[list[str]]) -> dict[str, str]:
        return {w: w for w in self.classes.fine_words}

    def agreement(self, captions: list[list[str]]) -> dict[str, str]:
        return measure_words(captions, set(self.matcher.w2c))

    def template(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        return neutral_measures(tokens, vocab.agreement)

    def agree(self, tokens: list[str], vocab: Vocabulary) -> list[str]:
        return agree_measures(tokens, vocab.agreement)

    def word_to_lemma(self, tokens: set[str]) -> dict[str, str]:
        return {t: t for t in sorted(tokens)}

    @property
    def metric_segmenter(self) -> Callable[[str], list[str]]:
        return pre_segmented


def pre_segmented(text: str) -> list[str]:
    """A segmented caption's tokens: what coco-caption's PTB tokenizer leaves of space-separated
    Chinese (split on spaces, punctuation dropped, lower case)."""
    return [t for t in text.lower().split() if not all(not ch.isalnum() for ch in t)]


LANGUAGES: dict[str, type[Language]] = {"en": English, "zh": Chinese}


def language_for(code: str | None, classes: ClassNames | None = None) -> Language:
    """The language of code `code` ('' or None: English) for a class file."""
    code = code or "en"
    if code not in LANGUAGES:
        raise DataError(f"unknown caption language '{code}' (known: {', '.join(LANGUAGES)})")
    return LANGUAGES[code](classes)


def language_of(vocab: Vocabulary) -> Language:
    """A vocabulary's language: the one its dic named (misc.dataset.load_dic sets it), else English."""
    lang = getattr(vocab, "language", None)
    return lang if lang is not None else language_for("en", vocab.classes)
