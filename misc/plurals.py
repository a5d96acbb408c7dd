"""English plural forms of nouns, by explicit rules and tables (no lemmatizer, no download).

    plurals(w) = IRREGULAR[w]                       person -> people | persons, mouse -> mice, ox -> oxen
               | (w, *alternatives)  w invariant    sheep, fish (| fishes), aircraft, luggage, scissors
               | compound of an irregular head      policeman -> policemen, grandchild -> grandchildren
               | stem + "ves"   listed -f / -fe     knife -> knives, calf -> calves (roof, chef, giraffe: + s)
               | stem + "ies"   consonant + y       puppy -> puppies (guy -> guys)
               | w + "es"       s, x, z, ch, sh     bench -> benches, glass -> glasses
               | w + "es"       listed -o           potato -> potatoes (photo, zoo: + s)
               | w + "s"        otherwise
Multi-word names inflect their last word ("teddy bear" -> "teddy bears"). The first form is the
one to render when a corpus does not say otherwise; all forms are plurals of w. A word that is
already plural (people, children, lemons) is recognised by `is_plural_noun`, so it is never
pluralised again ("peoples", "skiss"): a compound of an irregular plural (policemen,
grandchildren) is one too, and so is a word in -is / -us whose stem is a listed noun in -i / -u
(skis, taxis, zebus; not iris, tennis, cactus).

An invariant noun does not show its number; `number_from_context` reads it from the words around
it ("two sheep", "a herd of sheep", "sheep are" -> plural; "a sheep" -> singular).
"""
from __future__ import annotations

from functools import lru_cache

IRREGULAR: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"), "man": ("men",), "woman": ("women",), "child": ("children",),
    "mouse": ("mice",), "goose": ("geese",), "tooth": ("teeth",), "foot": ("feet",), "ox": ("oxen",),
    "louse": ("lice",), "die": ("dice",), "bus": ("buses", "busses"), "cactus": ("cacti", "cactuses"),
    "fungus": ("fungi", "funguses"), "octopus": ("octopuses", "octopi"),
    "hippopotamus": ("hippopotamuses", "hippopotami"), "passerby": ("passersby",),
    "quiz": ("quizzes",), "criterion": ("criteria",), "phenomenon": ("phenomena",),
    "hoof": ("hooves", "hoofs"), "scarf": ("scarves", "scarfs"), "dwarf": ("dwarfs", "dwarves"),
    "wharf": ("wharves", "wharfs"), "mosquito": ("mosquitoes", "mosquitos"),
    "volcano": ("volcanoes", "volcanos"), "tornado": ("tornadoes", "tornados"),
    "flamingo": ("flamingos", "flamingoes"), "mango": ("mangoes", "mangos"), "cargo": ("cargoes", "cargos"),
    "zero": ("zeros", "zeroes"), "buffalo": ("buffalo", "buffaloes", "buffalos"),
    "shrimp": ("shrimp", "shrimps"), "fish": ("fish", "fishes"), "quail": ("quail", "quails"),
    "stomach": ("stomachs",), "monarch": ("monarchs",), "epoch": ("epochs",), "tech": ("techs",),
}
# the head of a compound inflects like the word ("policeman", "grandchild", "dormouse") except:
COMPOUND_HEADS = ("woman", "man", "child", "mouse", "goose", "tooth", "foot", "person")
REGULAR_COMPOUNDS = frozenset({
    "human", "german", "shaman", "talisman", "ottoman", "caiman", "cayman", "doberman", "roman",
    "walkman", "pullman", "dolman", "mongoose", "bigfoot", "bluetooth", "barefoot"})
# -f / -fe words whose plural is -ves (compounds too: "pocketknife", "bookshelf")
VES = ("knife", "wife", "life", "leaf", "loaf", "half", "calf", "shelf", "wolf", "thief", "sheaf", "elf")
OES = frozenset({"potato", "tomato", "hero", "echo", "veto", "torpedo", "domino", "embargo"})
# the plural is the word itself: count nouns, mass nouns, and plural-only nouns (a pair of scissors)
INVARIANT = frozenset({
    "sheep", "deer", "moose", "elk", "reindeer", "bison", "swine", "salmon", "trout", "cod", "tuna",
    "squid", "offspring", "series", "species", "aircraft", "spacecraft", "hovercraft", "watercraft",
    "fowl", "waterfowl", "peafowl", "luggage", "baggage", "equipment", "furniture", "clothing",
    "silverware", "cutlery", "broccoli", "cauliflower", "lettuce", "spinach", "celery", "asparagus",
    "rice", "pasta", "spaghetti", "jewelry", "jewellery", "scissors", "pants", "jeans", "shorts",
    "trousers", "sunglasses", "eyeglasses", "goggles", "binoculars", "pliers", "tongs", "tweezers",
    "headphones", "earphones", "clothes", "pajamas", "pyjamas", "overalls", "leggings", "tights",
    "cattle", "people", "police", "livestock", "poultry", "wildlife",
    # mass nouns of the original's class files ("dirts", "hays" are no caption's plurals)
    "attire", "garb", "concrete", "dirt", "mud", "sand", "hay", "scaffolding", "soccer"})
INVARIANT_SUFFIXES = ("sheep", "fish", "deer", "ware", "wear")     # goldfish, silverware, swimwear
PLURAL_ONLY = frozenset({
    "scissors", "pants", "jeans", "shorts", "trousers", "sunglasses", "eyeglasses", "goggles",
    "binoculars", "pliers", "tongs", "tweezers", "headphones", "earphones", "pajamas", "pyjamas",
    "overalls", "leggings", "tights"})
COLLECTIVE = frozenset({"cattle", "people", "police", "livestock", "poultry"})   # always plural
# single words ending in "s" that are singular (besides the -ss / -us / -is endings)
SINGULAR_S = frozenset({"lens", "gas", "bias", "alias", "atlas", "canvas", "christmas", "chaos", "cosmos",
                        "thermos", "news", "physics", "mathematics", "gymnastics", "yes", "this", "its"})
# singular words that end like a compound's irregular plural ("specimen" is no plural of "speciman")
SINGULAR_MEN = frozenset({"specimen", "abdomen", "regimen", "stamen", "omen", "amen", "hymen", "semen", "lumen",
                          "acumen", "bitumen", "albumen", "ramen", "dolmen", "yemen", "foramen", "rumen",
                          "cerumen", "germen", "tegmen", "gravamen"})
# nouns in -i / -u whose plural is + "s": their plurals end in -is / -us like singular words
# (iris, tennis, cactus, bus), so they are listed
I_U_NOUNS = frozenset({
    "ski", "taxi", "bikini", "corgi", "kiwi", "safari", "martini", "salami", "alibi", "khaki", "yeti", "zucchini",
    "panini", "emoji", "chili", "deli", "tipi", "yogi", "sari", "okapi", "semi", "mini", "wiki", "origami",
    "zebu", "emu", "gnu", "menu", "tutu", "guru", "haiku", "tofu", "bayou", "caribou", "bijou", "tiramisu"})


@lru_cache(maxsize=100_000)
def plurals(word: str) -> tuple[str, ...]:
    """The plural forms of a singular noun (or multi-word name), preferred first."""
    if " " in word:
        head, last = word.rsplit(" ", 1)
        return tuple(f"{head} {p}" for p in plurals(last))
    if word in IRREGULAR:
        return IRREGULAR[word]
    if word in INVARIANT or word.endswith(INVARIANT_SUFFIXES) and word not in ("ware", "wear"):
        alternatives = tuple(f"{word[:-4]}{p}" for p in IRREGULAR["fish"][1:]) if word.endswith("fish") else ()
        return (word, *alternatives)
    for head in COMPOUND_HEADS:
        if word.endswith(head) and word != head and word not in REGULAR_COMPOUNDS:
            return tuple(word[:-len(head)] + p for p in IRREGULAR[head])
    return (regular_plural(word),)


def regular_plural(word: str) -> str:
    if word.endswith(VES):
        return word[:-2] + "ves" if word.endswith("fe") else word[:-1] + "ves"
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word in OES:
        return word + "es"
    return word + "s"


def is_plural_noun(word: str) -> bool:
    """A word that is already a plural: an irregular plural (people, children, oxen) or a compound
    of one (policemen, grandchildren), a collective (cattle), a listed noun in -i / -u plus "s"
    (skis, taxis, zebus), or a single word in "s" that is not singular by its ending (lemons,
    zebras; not bus, glass, iris, canvas, lens)."""
    last = word.rsplit(" ", 1)[-1]
    if last in _IRREGULAR_PLURALS or last in COLLECTIVE or _is_compound_plural(last):
        return True
    if last in INVARIANT or last in SINGULAR_S or last in IRREGULAR:
        return False
    if last.endswith(("us", "is")):
        return last[:-1] in I_U_NOUNS
    return last.endswith("s") and not last.endswith("ss")


def _is_compound_plural(word: str) -> bool:
    """policemen, grandchildren, dormice: a compound's irregular head in the plural."""
    if word in SINGULAR_MEN:
        return False
    for head in COMPOUND_HEADS:
        for p in IRREGULAR[head]:
            if word.endswith(p) and word != p and word in plurals(word[:-len(p)] + head):
                return True
    return False


_IRREGULAR_PLURALS = frozenset(p for w, ps in IRREGULAR.items() for p in ps if p != w)

# -- the number of an invariant noun, from its context ------------------------------------------
NUMBER_WORDS = frozenset({"two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                          "twelve", "dozen", "dozens", "hundreds", "thousands"})
PLURAL_CUES = NUMBER_WORDS | {"several", "many", "multiple", "numerous", "various", "few", "some", "these",
                              "those", "both", "lots", "more", "all"}
SINGULAR_CUES = frozenset({"a", "an", "one", "this", "that", "each", "every", "single", "another", "lone"})
GROUP_NOUNS = frozenset({"herd", "herds", "flock", "flocks", "group", "groups", "bunch", "bunches", "pile",
                         "piles", "stack", "stacks", "lot", "lots", "couple", "pair", "pairs", "number",
                         "crowd", "pack", "row", "rows", "line", "team", "family", "collection",
                         "assortment", "variety", "pieces", "set", "sets", "drove", "knot", "plenty"})


def number_from_context(tokens: list[str], start: int, end: int, word: str) -> int:
    """1 when the words around tokens[start:end] (an invariant noun) make it plural, else 0."""
    after = tokens[end] if end < len(tokens) and word not in PLURAL_ONLY else ""
    if after in ("are", "were"):                 # "sheep are", but "scissors are" is one object
        return 1
    if after in ("is", "was"):
        return 0
    for k in range(start - 1, max(start - 4, -1), -1):
        t = tokens[k]
        if t == "of":
            group = tokens[k - 1] if k else ""
            # "a pair of scissors" is one object, "a pair of sheep" two
            return int(group in GROUP_NOUNS and not (group == "pair" and word in PLURAL_ONLY))
        if t in SINGULAR_CUES:
            return 0
        if t in PLURAL_CUES or (t.isdigit() and int(t) > 1):
            return 1
    return 0
