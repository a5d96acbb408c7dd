"""Template -> caption: each pointer slot becomes the fine-grained word of the pointed region's class,
in its plural form when the plural head says so (NBT's "filling a slot": the template says where,
the slot heads say which word). `slot_word` is the one renderer: evaluation, the API and SCST's
rewards all fill slots through it, in the vocabulary's language (misc/language.py: an English
plural is inflected, a Chinese noun is not); the caption's text is the language's join of its
tokens, and each grounded word's `plural` is the number the caption states for it (English: the
rendered form; Chinese: its numeral / measure-word cues).

With `novel_classes` (decode_noc), a region of a held-out class is rendered with the class name
itself, since the fine-grained head never saw its words.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nbt.misc.decoding import Decoded
from nbt.misc.language import language_of
from nbt.misc.vocab import Vocabulary


@dataclass
class Caption:
    text: str                      # "two red rings next to a blue tile"
    tagged: str                    # "two red [rings] next to a blue [tile]"
    grounding: list                # [{word, position, region, box [x1,y1,x2,y2], class, score, plural}]
    score: float
    tokens: list = field(default_factory=list)    # the segmented caption (what the metrics score)

    def to_dict(self) -> dict:
        return {"caption": self.text, "tagged": self.tagged, "grounding": self.grounding, "score": self.score}


def slot_word(vocab: Vocabulary, cls: int, plural: int, fine: int, *, novel_classes=frozenset()) -> str:
    """The word of one slot: the fine-grained word `fine`, or the class name itself for a held-out
    class (novel_classes) or when no fine-grained word was chosen (fine < 0); plural form if plural."""
    base = vocab.classes.names[cls - 1] if cls in novel_classes or fine < 0 else vocab.classes.fine_words[fine]
    return language_of(vocab).render(vocab, base, plural)


def fill_slots(d: Decoded, vocab: Vocabulary, proposals, *, novel_classes: set[int] = frozenset(),
               box_scale: tuple[float, float] = (1.0, 1.0)) -> Caption:
    """proposals (R, 6) of this image in model-input pixels; box_scale maps them to the caller's."""
    V = vocab.size
    language = language_of(vocab)
    words, grounding = [], []
    for pos, (tok, plural, fine) in enumerate(zip(d.tokens, d.plural, d.fine)):
        if tok < V:
            words.append(vocab.word(tok))
            continue
        r = tok - V
        x1, y1, x2, y2, cls, score = [float(v) for v in proposals[r]]
        cls = int(cls)
        w = slot_word(vocab, cls, plural, fine, novel_classes=novel_classes)
        words.append(w)
        sx, sy = box_scale
        grounding.append({"word": w, "position": pos, "region": r, "class": vocab.classes.names[cls - 1],
                          "box": [round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)],
                          "score": round(score, 4), "plural": int(plural)})
    slots = {g["position"] for g in grounding}
    words = language.agree(words, vocab)                 # 两个[星星] -> 两颗星星; English: unchanged
    tagged = [f"[{w}]" if i in slots else w for i, w in enumerate(words)]
    for g in grounding:
        g["plural"] = language.number_said(words, g["position"], g["plural"])
    return Caption(language.join(words), language.join(tagged), grounding, d.score, words)
