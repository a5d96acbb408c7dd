"""Caption grammar of the built-in world: several sentence patterns, synonyms and word orders.

A caption mentions only groups present in the image: a group is the objects sharing category,
fine-grained kind and colour ("two red rings"). Noun choice: the kind word (ring / disc) most of the
time, the category word (circle) otherwise, so fine-grained words carry the information.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


def plural(word: str) -> str:
    if word.endswith(("s", "sh", "ch", "x")):
        return word + "es"
    return word + "s"


@dataclass
class Group:
    category: str
    kind: int          # 0 hollow, 1 filled
    colour: str
    count: int
    cx: float          # mean centre, fraction of the image
    cy: float

    @staticmethod
    def from_objects(objects: list[dict], size: int) -> list["Group"]:
        table: dict[tuple, list[dict]] = {}
        for o in objects:
            table.setdefault((o["category"], o["kind"], o["colour"]), []).append(o)
        groups = []
        for (cat, kind, colour), objs in table.items():
            cx = float(np.mean([o["centre"][0] for o in objs])) / size
            cy = float(np.mean([o["centre"][1] for o in objs])) / size
            groups.append(Group(cat, kind, colour, len(objs), cx, cy))
        return groups


class CaptionGrammar:
    def __init__(self, categories: dict[str, tuple[str, str]], colours: list[str],
                 kind_word_prob: float = 0.85, colour_prob: float = 0.9):
        self.categories = categories
        self.colours = colours
        self.kind_word_prob = kind_word_prob
        self.colour_prob = colour_prob

    # -- phrases --------------------------------------------------------------------------
    def noun_phrase(self, g: Group, rng: np.random.Generator) -> str:
        noun = self.categories[g.category][g.kind] if rng.random() < self.kind_word_prob else g.category
        words = [g.colour] if rng.random() < self.colour_prob else []
        if g.count == 1:
            words = words + [noun]
            words.insert(0, "an" if words[0][0] in "aeiou" else "a")
        else:
            number = NUMBERS.get(g.count, "several") if rng.random() < 0.85 else "several"
            words = [number] + words + [plural(noun)]
        return " ".join(words)

    @staticmethod
    def relation(a: Group, b: Group, rng: np.random.Generator) -> str:
        dx, dy = a.cx - b.cx, a.cy - b.cy
        if rng.random() < 0.25:
            return ["next to", "beside", "near"][int(rng.integers(3))]
        if abs(dx) >= abs(dy):
            return "to the left of" if dx < 0 else "to the right of"
        return "above" if dy < 0 else "below"

    @staticmethod
    def position(g: Group) -> str:
        if g.cx < 0.35:
            return "on the left"
        if g.cx > 0.65:
            return "on the right"
        if g.cy < 0.35:
            return "at the top"
        if g.cy > 0.65:
            return "at the bottom"
        return "in the middle"

    # -- sentences ------------------------------------------------------------------------
    def sentence(self, groups: list[Group], rng: np.random.Generator) -> tuple[str, set[str]]:
        order = [groups[i] for i in rng.permutation(len(groups))]
        pattern = int(rng.integers(6))
        if len(order) == 1 or pattern == 0:
            g = order[0]
            np_ = self.noun_phrase(g, rng)
            choice = int(rng.integers(5))
            if choice == 0:
                text = f"{np_} {self.position(g)}"
            elif choice == 1:
                verb = "is" if g.count == 1 else "are"
                text = f"there {verb} {np_} {self.position(g)}"
            elif choice == 2:
                text = f"{np_} on a grey background"
            elif choice == 3:
                text = f"a picture of {np_}"
            else:
                text = f"a grey picture showing {np_}"
            return text, {g.category}
        a, b = order[0], order[1]
        pa, pb = self.noun_phrase(a, rng), self.noun_phrase(b, rng)
        if pattern == 1:
            text, used = f"{pa} {self.relation(a, b, rng)} {pb}", [a, b]
        elif pattern == 2:
            verb = "is" if a.count == 1 else "are"
            text, used = f"there {verb} {pa} and {pb}", [a, b]
        elif pattern == 3 and len(order) >= 3:
            pc = self.noun_phrase(order[2], rng)
            text, used = f"an image with {pa} {pb} and {pc}", order[:3]
        elif pattern == 4:
            text, used = f"{pa} and {pb} on a grey background", [a, b]
        else:
            text, used = f"{pa} {self.position(a)} and {pb} {self.position(b)}", [a, b]
        return text, {g.category for g in used}

    def captions(self, groups: list[Group], n: int, rng: np.random.Generator) -> list[tuple[str, set[str]]]:
        if not groups:
            return [("an empty grey picture", set())] * n
        out = [self.sentence(groups, rng) for _ in range(n)]
        # at least one caption names every group when there are few, as people usually do
        if len(groups) <= 3 and not any(len(c) == len({g.category for g in groups}) for _, c in out):
            phrases = [self.noun_phrase(g, rng) for g in groups]
            text = phrases[0] if len(phrases) == 1 else " ".join(phrases[:-1]) + " and " + phrases[-1]
            out[-1] = (f"a picture of {text}", {g.category for g in groups})
        return out
