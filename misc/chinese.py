"""Chinese captions: segmentation, number cues and the visual-word matcher.

Segmentation is spaCy's Chinese tokenizer with the jieba segmenter in its precise mode
(`jieba.cut(text, cut_all=False)`, as AI Challenger's official evaluation segments), on a jieba
dictionary of its own to which the class-file words are added (`add_word` with jieba's suggested
frequency: enough to keep 小狗 whole, not so much that 斑马线 becomes 斑马 + 线). Punctuation and
spaces are dropped, Latin letters lower-cased. Two repairs follow, each only where a class word
would otherwise be hidden inside a token:

    cue + class word      一个男孩 -> 一个 男孩,  三只狗 -> 三只 狗   (jieba's dictionary holds such merges)
    class word + rest     人站 -> 人 站 (a word jieba's HMM made up, not in its dictionary),
                          孩子们 / 人们 -> 孩子 们, 人 们 (the plural suffix)

A dictionary word that merely contains a class word is text: 斑马线 (zebra crossing) is no zebra,
人行道 no person, 火车站 no train.

Number. Chinese nouns do not inflect; a noun phrase states its number by a numeral and measure
word before it (一只狗, 两只狗, 三个人, 3 个 人), a collective measure (一群羊, 一对, 一双), a
quantifier (一些, 许多, 几个, 很多, 这些) or the suffix 们 after it. `number_before` reads the
nearest such cue within the noun's own phrase (back to the previous visual word or a conjunction
和 / 与 / 、): plural when the number is more than one or the cue is collective, singular when it
is one (or 这 / 那 / 每 + measure), and singular when there is no cue (a bare noun).

Agreement. An individual measure word depends on its noun (一颗星星, 一条折线, 一个圆环), which a
slot chooses after the template has said the measure. `measure_words` learns from the training
captions which measure each noun takes (the dic's `agreement`). The decoder is trained on captions
whose measures before those nouns are the general 个 (`neutral_measures`: 两颗星星 -> 两个星星), so
its template commits to no noun, and a filled caption's measures are made to agree with its nouns
(`agree_measures`: 两个[星星] -> 两颗星星), as an English slot renders its noun's ending. Collective
measures (一群) and quantifiers (一些) do not depend on the noun and are left as they are.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from nbt.misc.vocab import ClassNames, Form, VisualWord

DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "仨": 3, "四": 4, "五": 5, "六": 6,
          "七": 7, "八": 8, "九": 9}
UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
VAGUE = "几数多"                                    # 几个, 数只, 多个: more than one
# individual measure words (一个人, 一只狗, 一辆车 ...) and collective ones (一群羊 = several sheep)
MEASURES = frozenset("个只位名条头匹辆张把架艘台块件本支根棵朵颗盏座间部扇面枚顶盆瓶杯碗盘份片粒尾具栋幅列")
COLLECTIVE = frozenset("群对双堆排些串组队伙批副打窝束")
PLURAL_WORDS = frozenset({
    "一些", "有些", "许多", "很多", "好多", "不少", "众多", "大量", "若干", "各种", "各式各样", "多个", "几个",
    "这些", "那些", "所有", "一群群", "成群", "两", "俩", "仨", "们", "各个", "无数", "好几个", "一堆堆"})
SINGULAR_WORDS = frozenset({"这", "那", "每", "单个", "独自", "一", "唯一", "某"})
PLURAL_SUFFIX = "们"
PHRASE_BREAKS = frozenset({"和", "与", "及", "以及", "跟", "同", "还有", "、", "，", "或", "或者"})
MAX_LOOKBACK = 8                                   # tokens searched before a noun for its cue
_NUMERAL = re.compile(r"^(?:[0-9]+|[零〇一二两俩三仨四五六七八九十百千万]+|[几数多])$")


def numeral_value(text: str) -> int | None:
    """一 -> 1, 两 -> 2, 十二 -> 12, 3 -> 3, 几 / 数 / 多 -> 2 (more than one); None if not a numeral."""
    if not text or not _NUMERAL.match(text):
        return None
    if text.isdigit():
        return int(text)
    if text in VAGUE:
        return 2
    total, digit = 0, None
    for ch in text:
        if ch in DIGITS:
            digit = DIGITS[ch]
        else:
            total += (1 if digit is None else digit) * UNITS[ch]
            digit = None
    return total + (digit or 0)


def cue_number(token: str, previous: str = "") -> int | None:
    """The number a cue token states: 1 plural, 0 singular, None when it is no cue. `previous` is
    the token before it (a bare measure word after a numeral token: "3" "个")."""
    if token in PLURAL_WORDS:
        return 1
    if token in SINGULAR_WORDS:
        return 0
    if len(token) >= 1 and token[-1] in MEASURES | COLLECTIVE:
        head, measure = token[:-1], token[-1]
        if head in ("这", "那", "每", "哪", "某"):
            return 0
        value = numeral_value(head) if head else numeral_value(previous)
        if value is None:
            return None
        return int(measure in COLLECTIVE or value > 1)
    value = numeral_value(token)
    return None if value is None else int(value > 1)


def number_before(tokens: list[str], start: int, end: int, is_visual=lambda i: False) -> int:
    """1 when the cues around tokens[start:end] (a noun) make it plural, else 0 (module docstring)."""
    if end < len(tokens) and tokens[end] == PLURAL_SUFFIX:
        return 1
    k = cue_before(tokens, start, is_visual)
    return 0 if k is None else cue_number(tokens[k], tokens[k - 1] if k else "")


def cue_before(tokens: list[str], start: int, is_visual=lambda i: False) -> int | None:
    """Position of the cue that counts the noun at tokens[start]: the nearest within its own phrase
    (back to the previous visual word or a conjunction, at most MAX_LOOKBACK tokens); None if none."""
    for k in range(start - 1, max(start - 1 - MAX_LOOKBACK, -1), -1):
        t = tokens[k]
        if t in PHRASE_BREAKS or is_visual(k):
            return None
        if cue_number(t, tokens[k - 1] if k else "") is not None:
            return k
    return None


def individual_measure(token: str, previous: str = "") -> str | None:
    """The individual measure word a cue ends in (一颗 -> 颗, 这只 -> 只, "3" "个" -> 个); None for
    other cues (一群, 一些, 两) and non-cues. It agrees with the noun it counts (一颗星星, 一条折线)."""
    if not token or token[-1] not in MEASURES:
        return None
    head = token[:-1]
    if head in ("这", "那", "每", "哪", "某") or numeral_value(head if head else previous) is not None:
        return token[-1]
    return None


def measure_before(tokens: list[str], i: int, is_noun=lambda k: False) -> int | None:
    """Position of the cue counting the noun at tokens[i] when it ends in an individual measure
    word (两颗 星星 -> 0); None when its cue is another kind (一群, 一些) or there is none."""
    k = cue_before(tokens, i, is_noun)
    if k is None or individual_measure(tokens[k], tokens[k - 1] if k else "") is None:
        return None
    return k


def measure_words(captions: list[list[str]], nouns: set[str]) -> dict[str, str]:
    """noun -> the individual measure word the captions count it with most often (ties: the first
    seen); nouns never counted by one are absent. Learned from the training captions at prepro."""
    counts: dict[str, Counter] = {}
    for tokens in captions:
        visual = {i for i, t in enumerate(tokens) if t in nouns}
        for i in sorted(visual):
            k = measure_before(tokens, i, visual.__contains__)
            if k is not None:
                counts.setdefault(tokens[i], Counter())[tokens[k][-1]] += 1
    return {noun: c.most_common(1)[0][0] for noun, c in sorted(counts.items())}


GENERAL_MEASURE = "个"        # the measure any noun may take: a template's neutral form


def agree_measures(tokens: list[str], measure_of: dict[str, str]) -> list[str]:
    """tokens with the individual measure word counting each noun of `measure_of` made the one
    the noun takes (一个 星星 -> 一颗 星星): the noun decides its measure, as an English noun its
    ending. Collective measures and quantifiers (一群, 一些) are left as they are."""
    return _with_measures(tokens, measure_of, measure_of.get)


def neutral_measures(tokens: list[str], measure_of: dict[str, str]) -> list[str]:
    """tokens with the individual measure word counting each noun of `measure_of` made the
    general one (两颗 星星 -> 两个 星星): the decoder's template, which says the measure before a
    slot has chosen its noun; rendering makes it agree again (agree_measures)."""
    return _with_measures(tokens, measure_of, lambda noun: GENERAL_MEASURE)


def _with_measures(tokens: list[str], nouns, measure) -> list[str]:
    out = list(tokens)
    is_noun = [t in nouns for t in out]
    for i, noun in enumerate(out):
        k = measure_before(out, i, is_noun.__getitem__) if is_noun[i] else None
        if k is not None:
            out[k] = out[k][:-1] + measure(noun)
    return out


def is_cue(text: str) -> bool:
    """A numeral / measure / quantifier prefix that may be split off a class word (一个, 三只, 一群)."""
    return text in PLURAL_WORDS or (cue_number(text) is not None and not text.isdigit())


@lru_cache(maxsize=1)
def _silence_jieba() -> None:
    import jieba
    jieba.setLogLevel(logging.WARNING)


class ChineseSegmenter:
    """Raw Chinese caption -> tokens (module docstring). `words`: the class-file words, kept whole."""

    def __init__(self, words=()):
        import jieba
        import spacy
        _silence_jieba()
        self.words = frozenset(words)
        self.nlp = spacy.blank("zh", config={"nlp": {"tokenizer": {"segmenter": "jieba"}}})
        self.jieba = jieba.Tokenizer()                  # a dictionary of our own: jieba's global one is untouched
        self.jieba.initialize()
        for w in sorted(self.words):
            if " " not in w:
                self.jieba.add_word(w)
        self.nlp.tokenizer.jieba_seg = self.jieba
        self._longest = max((len(w) for w in self.words), default=0)

    def __call__(self, text: str) -> list[str]:
        doc = self.nlp(" ".join(str(text).lower().split()))
        tokens = [t.text for t in doc if not (t.is_punct or t.is_space)]
        return [piece for tok in tokens for piece in self.repair(tok)]

    def repair(self, token: str) -> list[str]:
        """A token hiding a class word -> its pieces (module docstring); others unchanged."""
        if token in self.words or not self.words or len(token) < 2:
            return [token]
        for k in range(1, len(token)):                  # cue + class word: the longest class word
            if token[k:] in self.words and is_cue(token[:k]):
                return [token[:k], token[k:]]
        for k in range(min(len(token) - 1, self._longest), 0, -1):   # class word + rest
            head, rest = token[:k], token[k:]
            if head in self.words and (rest == PLURAL_SUFFIX or not self.jieba.FREQ.get(token)):
                return [head, *self.repair(rest)]
        return [token]


@dataclass(frozen=True)
class ChineseForms:
    """Every class-file word is its own singular and plural surface (no inflection)."""
    words: tuple[str, ...]

    @property
    def plurals(self) -> dict[str, tuple[str, ...]]:
        return {w: (w,) for w in self.words}

    @property
    def surface(self) -> dict[str, Form]:
        return {w: Form(w, -1) for w in self.words}      # number: from the context, always

    def singular(self, surface: str) -> str:
        return surface


class ChineseMatcher:
    """Visual words of a segmented Chinese caption: tokens equal to a class-file word (a word is
    one token: the segmenter keeps class words whole), each with its number from the cues."""

    def __init__(self, classes: ClassNames):
        self.classes = classes
        self.w2c = classes.word_to_class()
        self.fine_index = {w: i for i, w in enumerate(classes.fine_words)}

    def match(self, tokens: list[str], present: set[int] | None = None) -> list[VisualWord]:
        hits = [i for i, t in enumerate(tokens) if t in self.w2c]
        visual = set(hits)
        found = []
        for i in hits:
            cls = self.w2c[tokens[i]]
            if present is not None and cls not in present:
                continue
            number = number_before(tokens, i, i + 1, visual.__contains__)
            found.append(VisualWord(i, 1, cls, number, self.fine_index[tokens[i]], tokens[i]))
        return found

    def mentioned_classes(self, captions: list[list[str]], present: set[int] | None = None) -> set[int]:
        return {v.cls for toks in captions for v in self.match(toks, present)}
