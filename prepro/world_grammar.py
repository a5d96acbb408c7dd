"""Caption grammar of the built-in world: several sentence patterns, synonyms and word orders.

A caption mentions only groups present in the image: a group is the objects sharing category,
fine-grained kind and colour ("two red rings"). Noun choice: the kind word (ring / disc) most of the
time, the category word (circle) otherwise, so fine-grained words carry the information.

`CaptionGrammar` makes every random choice (pattern, noun, colour, number, relation); a
`Phrasing` says them in one language. English and Chinese draw the same random numbers, so the
Chinese world (`prepro/world.py --lang zh`) has the same images, objects, detections and splits as
the English one, and each Chinese caption says what its English twin says:

    two red rings to the left of a blue tile   两个红色的圆环在一个蓝色的方块的左边
    there are three stars on the right         右边有三颗星星

Chinese nouns do not inflect: the number is in the numeral and its measure word (一个, 两颗,
几顶 for "several"), the colour joins its noun through 的 (红色的圆环).
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


class Phrasing:
    """How one language says the grammar's choices; keys are the English words."""
    code = "en"

    def word(self, key: str) -> str:
        """A category, kind or colour word (the English key itself)."""
        return key

    def noun_phrase(self, noun: str, colour: str | None, count: int, exact: bool) -> str:
        words = [colour] if colour else []
        if count == 1:
            words = words + [noun]
            words.insert(0, "an" if words[0][0] in "aeiou" else "a")
        else:
            number = NUMBERS.get(count, "several") if exact else "several"
            words = [number] + words + [plural(noun)]
        return " ".join(words)

    def single(self, choice: int, np_: str, position: str, count: int) -> str:
        if choice == 0:
            return f"{np_} {position}"
        if choice == 1:
            return f"there {'is' if count == 1 else 'are'} {np_} {position}"
        if choice == 2:
            return f"{np_} on a grey background"
        if choice == 3:
            return f"a picture of {np_}"
        return f"a grey picture showing {np_}"

    def related(self, pa: str, relation: str, pb: str) -> str:
        return f"{pa} {relation} {pb}"

    def there_are(self, pa: str, pb: str, count_a: int) -> str:
        return f"there {'is' if count_a == 1 else 'are'} {pa} and {pb}"

    def image_with(self, pa: str, pb: str, pc: str) -> str:
        return f"an image with {pa} {pb} and {pc}"

    def on_background(self, pa: str, pb: str) -> str:
        return f"{pa} and {pb} on a grey background"

    def placed(self, pa: str, pos_a: str, pb: str, pos_b: str) -> str:
        return f"{pa} {pos_a} and {pb} {pos_b}"

    def empty(self) -> str:
        return "an empty grey picture"

    def picture_of(self, phrases: list[str]) -> str:
        text = phrases[0] if len(phrases) == 1 else " ".join(phrases[:-1]) + " and " + phrases[-1]
        return f"a picture of {text}"


ZH_WORDS = {
    "circle": "圆形", "ring": "圆环", "disc": "圆盘", "square": "正方形", "frame": "方框", "tile": "方块",
    "triangle": "三角形", "tent": "帐篷", "wedge": "楔子", "star": "星星", "spark": "火花", "badge": "徽章",
    "arrow": "箭头", "chevron": "折线", "dart": "飞镖", "diamond": "菱形", "kite": "风筝", "gem": "宝石",
    "hexagon": "六边形", "nut": "螺母", "cell": "蜂巢", "heart": "心形", "locket": "吊坠", "valentine": "爱心",
    "cross": "十字", "stitch": "针脚", "plus": "加号", "moon": "月亮", "sickle": "镰刀", "crescent": "月牙",
    "red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
}
ZH_MEASURES = {"星星": "颗", "火花": "朵", "徽章": "枚", "折线": "条", "飞镖": "支", "风筝": "只", "宝石": "颗",
               "螺母": "颗", "爱心": "颗", "帐篷": "顶", "镰刀": "把"}        # the others: 个
ZH_NUMBERS = {1: "一", 2: "两", 3: "三", 4: "四", 5: "五"}
ZH_PLACES = {"on the left": "左边", "on the right": "右边", "at the top": "上面", "at the bottom": "下面",
             "in the middle": "中间"}
ZH_RELATIONS = {"next to": "旁边", "beside": "边上", "near": "附近", "to the left of": "的左边",
                "to the right of": "的右边", "above": "的上面", "below": "的下面"}


class ChinesePhrasing(Phrasing):
    """The same choices in Chinese: measure words, 的 before the noun, 在 / 有 sentences."""
    code = "zh"

    def word(self, key: str) -> str:
        return ZH_WORDS[key]

    def noun_phrase(self, noun: str, colour: str | None, count: int, exact: bool) -> str:
        number = ZH_NUMBERS[count] if count == 1 or exact and count in ZH_NUMBERS else "几"
        return f"{number}{ZH_MEASURES.get(noun, '个')}{colour + '的' if colour else ''}{noun}"

    def single(self, choice: int, np_: str, position: str, count: int) -> str:
        place = ZH_PLACES[position]
        return [f"{np_}在{place}", f"{place}有{np_}", f"灰色的背景上有{np_}", f"一张有{np_}的图片",
                f"一张显示着{np_}的灰色图片"][choice]

    def related(self, pa: str, relation: str, pb: str) -> str:
        return f"{pa}在{pb}{ZH_RELATIONS[relation]}"

    def there_are(self, pa: str, pb: str, count_a: int) -> str:
        return f"有{pa}和{pb}"

    def image_with(self, pa: str, pb: str, pc: str) -> str:
        return f"一张有{pa}、{pb}和{pc}的图片"

    def on_background(self, pa: str, pb: str) -> str:
        return f"灰色的背景上有{pa}和{pb}"

    def placed(self, pa: str, pos_a: str, pb: str, pos_b: str) -> str:
        return f"{pa}在{ZH_PLACES[pos_a]}，{pb}在{ZH_PLACES[pos_b]}"

    def empty(self) -> str:
        return "一张空白的灰色图片"

    def picture_of(self, phrases: list[str]) -> str:
        text = phrases[0] if len(phrases) == 1 else "、".join(phrases[:-1]) + "和" + phrases[-1]
        return f"一张有{text}的图片"


PHRASINGS = {"en": Phrasing, "zh": ChinesePhrasing}


class CaptionGrammar:
    def __init__(self, categories: dict[str, tuple[str, str]], colours: list[str],
                 kind_word_prob: float = 0.85, colour_prob: float = 0.9, phrasing: Phrasing | None = None):
        self.categories = categories
        self.colours = colours
        self.kind_word_prob = kind_word_prob
        self.colour_prob = colour_prob
        self.say = phrasing or Phrasing()

    # -- phrases --------------------------------------------------------------------------
    def noun_phrase(self, g: Group, rng: np.random.Generator) -> str:
        noun = self.categories[g.category][g.kind] if rng.random() < self.kind_word_prob else g.category
        colour = g.colour if rng.random() < self.colour_prob else None
        exact = g.count > 1 and rng.random() < 0.85
        return self.say.noun_phrase(self.say.word(noun), self.say.word(colour) if colour else None, g.count, exact)

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
            return self.say.single(int(rng.integers(5)), np_, self.position(g), g.count), {g.category}
        a, b = order[0], order[1]
        pa, pb = self.noun_phrase(a, rng), self.noun_phrase(b, rng)
        if pattern == 1:
            text, used = self.say.related(pa, self.relation(a, b, rng), pb), [a, b]
        elif pattern == 2:
            text, used = self.say.there_are(pa, pb, a.count), [a, b]
        elif pattern == 3 and len(order) >= 3:
            pc = self.noun_phrase(order[2], rng)
            text, used = self.say.image_with(pa, pb, pc), order[:3]
        elif pattern == 4:
            text, used = self.say.on_background(pa, pb), [a, b]
        else:
            text, used = self.say.placed(pa, self.position(a), pb, self.position(b)), [a, b]
        return text, {g.category for g in used}

    def captions(self, groups: list[Group], n: int, rng: np.random.Generator) -> list[tuple[str, set[str]]]:
        if not groups:
            return [(self.say.empty(), set())] * n
        out = [self.sentence(groups, rng) for _ in range(n)]
        # at least one caption names every group when there are few, as people usually do
        if len(groups) <= 3 and not any(len(c) == len({g.category for g in groups}) for _, c in out):
            phrases = [self.noun_phrase(g, rng) for g in groups]
            out[-1] = (self.say.picture_of(phrases), {g.category for g in groups})
        return out
