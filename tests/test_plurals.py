"""The singular <-> plural relation of class-file words, the matcher that uses it, and the
rendering that must agree with it - on hand-made cases, the original's class-file quirks and
every caption of coco-mini."""
import json
import warnings

import pytest

from conftest import COCO_MINI, ROOT, needs_coco_mini
from nbt.misc.plurals import number_from_context, plurals
from nbt.misc.vocab import ClassNames, VisualWordMatcher, Vocabulary, plural_forms, word_to_lemma

COCO_CLASSES = ROOT / "data" / "coco" / "coco_class_name.txt"

# singular -> its plural forms, preferred first (written from English, not from the code)
ENGLISH = {
    "dog": ("dogs",), "bus": ("buses", "busses"), "glass": ("glasses",), "bench": ("benches",),
    "box": ("boxes",), "toothbrush": ("toothbrushes",), "puppy": ("puppies",), "guy": ("guys",),
    "monkey": ("monkeys",), "knife": ("knives",), "pocketknife": ("pocketknives",), "calf": ("calves",),
    "shelf": ("shelves",), "wife": ("wives",), "leaf": ("leaves",), "roof": ("roofs",), "chef": ("chefs",),
    "giraffe": ("giraffes",), "cliff": ("cliffs",), "hoof": ("hooves", "hoofs"), "potato": ("potatoes",),
    "photo": ("photos",), "zoo": ("zoos",), "sheep": ("sheep",), "deer": ("deer",),
    "fish": ("fish", "fishes"), "goldfish": ("goldfish", "goldfishes"), "aircraft": ("aircraft",),
    "person": ("people", "persons"), "man": ("men",), "woman": ("women",), "child": ("children",),
    "mouse": ("mice",), "goose": ("geese",), "tooth": ("teeth",), "foot": ("feet",), "ox": ("oxen",),
    "policeman": ("policemen",), "grandchild": ("grandchildren",), "human": ("humans",),
    "mongoose": ("mongooses",), "fox": ("foxes",), "ski": ("skis",), "taxi": ("taxis",),
    "teddy bear": ("teddy bears",), "hot dog": ("hot dogs",), "wine glass": ("wine glasses",),
    "tennis racket": ("tennis rackets",), "fire hydrant": ("fire hydrants",), "cell phone": ("cell phones",),
}


@pytest.mark.parametrize("word", sorted(ENGLISH))
def test_plural_forms_follow_english(word):
    assert plurals(word) == ENGLISH[word]


def _coco():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClassNames.read(COCO_CLASSES)


def _found(matcher, text):
    classes = matcher.classes
    return [(v.surface, classes.fine_words[v.fine], v.plural) for v in matcher.match(text.split())]


def test_skiing_is_not_the_plural_of_ski():
    m = VisualWordMatcher(_coco())
    assert _found(m, "a man skiing down a hill on skis") == [("man", "man", 0), ("skis", "ski", 1)]
    assert _found(m, "skiing") == []


@pytest.mark.parametrize("text", ["a tied up boat", "bedding on a bed", "a glassy lake",
                                  "a teddy bearing gifts", "two people skating", "a boy skateboarding",
                                  "clear skies", "a bearded man"])
def test_verb_forms_and_derived_words_are_text(text):
    m = VisualWordMatcher(_coco())
    found = {s for s, _, _ in _found(m, text)}
    assert not found & {"tied", "bedding", "glassy", "teddy bearing", "skating", "skateboarding", "skies",
                        "bearded", "bearing"}


def test_irregular_plurals_are_visual_words():
    m = VisualWordMatcher(_coco())
    text = "knives geese mice calves oxen children women men people glasses wine glasses teddy bears hot dogs"
    assert _found(m, text) == [
        ("knives", "knife", 1), ("geese", "goose", 1), ("mice", "mouse", 1), ("calves", "calf", 1),
        ("oxen", "ox", 1), ("children", "child", 1), ("women", "woman", 1), ("men", "man", 1),
        ("people", "person", 1), ("glasses", "glass", 1), ("wine glasses", "wine glass", 1),
        ("teddy bears", "teddy bear", 1), ("hot dogs", "hot dog", 1)]


def test_invariant_nouns_take_their_number_from_the_context():
    cases = {"a sheep grazing": 0, "two sheep grazing": 1, "a herd of sheep": 1, "sheep are standing": 1,
             "a single sheep grazes": 0, "some cooked broccoli": 1, "a piece of broccoli": 0,
             "a pair of scissors": 0, "a pair of golden scissors are used": 0, "3 sheep": 1}
    for text, number in cases.items():
        toks = text.split()
        word = "scissors" if "scissors" in toks else "broccoli" if "broccoli" in toks else "sheep"
        i = toks.index(word)
        assert number_from_context(toks, i, i + 1, word) == number, text


def test_rendering_and_reading_back_use_the_matchers_relation():
    """For every word of the class file: its rendered plural is matched as that word in the plural,
    and read back (Vocabulary.singular) as that word."""
    classes = _coco()
    vocab = Vocabulary({"1": "UNK"}, classes)
    m = VisualWordMatcher(classes)
    for w in classes.fine_words:
        p = vocab.plural(w)
        base = classes.forms.singular(w)                     # "people" is person's plural itself
        found = m.match(p.split())
        assert len(found) == 1 and found[0].length == len(p.split()), (w, p)
        assert classes.fine_words[found[0].fine] == base and vocab.singular(p) == base, (w, p)
        assert found[0].plural == 1 or p == w, (w, p)       # invariant: the context decides


def test_world_class_file_round_trips(world_dir):
    classes = ClassNames.read(world_dir / "world_class_name.txt")
    vocab = Vocabulary({"1": "UNK"}, classes)
    for w in classes.fine_words:
        assert vocab.plural(w) == w + ("es" if w.endswith(("s", "x", "ch", "sh")) else "s")
        assert vocab.singular(vocab.plural(w)) == w


def test_bad_corpus_plurals_of_older_dic_files_are_not_rendered():
    classes = _coco()
    vocab = Vocabulary({"1": "UNK"}, classes, {"people": "peoples", "skis": "skiss", "ski": "skiing",
                                               "tie": "tied", "person": "persons", "bus": "busses"})
    assert [vocab.plural(w) for w in ("people", "skis", "ski", "tie", "person", "bus", "knife")] == \
        ["people", "skis", "skis", "ties", "persons", "busses", "knives"]


def test_corpus_picks_among_real_plurals_only():
    classes = _coco()
    m = VisualWordMatcher(classes)
    caps = [t.split() for t in ["two persons", "three persons", "some people", "two buses", "two busses",
                                "two busses", "a man skiing", "a man skiing"]]
    table = plural_forms(caps, classes, m)
    assert table["person"] == "persons" and table["bus"] == "busses" and table["ski"] == "skis"
    assert table["people"] == "people" and table["skis"] == "skis" and table["knife"] == "knives"


def test_wtol_maps_plurals_to_their_word_for_the_originals_loader():
    wtol = word_to_lemma({"dogs", "skiing", "people", "bears", "signs", "running", "dog"}, _coco())
    assert wtol == {"dogs": "dog", "skiing": "skiing", "people": "person", "bears": "bear",
                    "signs": "sign", "running": "running", "dog": "dog"}


def test_original_class_file_quirks(tmp_path):
    """Repeats on a line (silently kept once), plural entries (people, children, oxen: aliases of
    their singular), a lone plural entry (lemons), stray spaces and capitals."""
    p = tmp_path / "classes.txt"
    p.write_text("person, girl, man, people, children, child, person, woman, policeman\n"
                 "cow, cattle, oxen, ox, calf, cattle, bull\norange, lemons\n"
                 "cell phone, phone,  iPhone \nknife, pocketknife\nskis, ski\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # a repeat on its own line is no warning
        classes = ClassNames.read(p)
    assert classes.words[0].count("person") == 1 and "iphone" in classes.words[3]
    m = VisualWordMatcher(classes)
    assert _found(m, "people children oxen cattle lemons iphones pocketknives policemen skis") == [
        ("people", "person", 1), ("children", "child", 1), ("oxen", "ox", 1), ("cattle", "cattle", 1),
        ("lemons", "lemons", 1), ("iphones", "iphone", 1), ("pocketknives", "pocketknife", 1),
        ("policemen", "policeman", 1), ("skis", "ski", 1)]
    vocab = Vocabulary({"1": "UNK"}, classes)
    assert [vocab.plural(w) for w in ("person", "people", "lemons", "cattle", "skis", "ox")] == \
        ["people", "people", "lemons", "cattle", "skis", "oxen"]


# Every plural visual word the matcher finds in coco-mini's 795 captions (written down from its
# output, checked by hand as English): surface -> the class-file word it is the plural of.
COCO_MINI_PLURALS = {
    "adults": "adult", "airplanes": "airplane", "bags": "bag", "bananas": "banana", "bears": "bear",
    "beds": "bed", "bikes": "bike", "birds": "bird", "boats": "boat", "books": "book", "bottles": "bottle",
    "bowls": "bowl", "broccoli": "broccoli", "buses": "bus", "cakes": "cake", "carrots": "carrot",
    "cars": "car", "cats": "cat", "cattle": "cattle", "chairs": "chair", "computers": "computer",
    "couches": "couch", "cows": "cow", "cups": "cup", "donuts": "donut", "doughnuts": "doughnut",
    "elephants": "elephant", "frisbees": "frisbee", "giraffes": "giraffe", "glasses": "glass",
    "guys": "guy", "hamburgers": "hamburger", "horses": "horse", "jets": "jet", "keyboards": "keyboard",
    "kids": "kid", "laptops": "laptop", "luggage": "luggage", "men": "man", "mice": "mouse",
    "microwaves": "microwave", "monitors": "monitor", "motorcycles": "motorcycle", "oranges": "orange",
    "ovens": "oven", "parking meters": "parking meter", "people": "person", "persons": "person",
    "phones": "phone", "pizzas": "pizza", "plants": "plant", "players": "player", "riders": "rider",
    "scissors": "scissors", "screens": "screen", "sheep": "sheep", "skateboards": "skateboard",
    "skiers": "skier", "skis": "ski", "suitcases": "suitcase", "surfboards": "surfboard",
    "surfers": "surfer", "tables": "table", "teddy bears": "teddy bear", "toilets": "toilet",
    "toothbrushes": "toothbrush", "trains": "train", "trucks": "truck", "umbrellas": "umbrella",
    "wine glasses": "wine glass", "women": "woman", "zebras": "zebra",
}
# tokens of coco-mini that share a lemma or a prefix with a class word but name no object
COCO_MINI_TEXT = {"skiing", "tied", "bedding", "bearing", "lighting", "lit", "skateboarding",
                  "snowboarding", "skies", "bearded", "catcher", "busy", "bushes", "batter"}


@needs_coco_mini
def test_every_coco_mini_caption_against_the_table():
    from nbt.prepro.prepro_dic_coco import tokenize
    caps = [tokenize(a["caption"]) for f in ("captions_train2017.json", "captions_val2017.json")
            for a in json.loads((COCO_MINI / "annotations" / f).read_text())["annotations"]]
    classes = _coco()
    m = VisualWordMatcher(classes)
    plural, singular, tokens = {}, set(), set()
    for toks in caps:
        tokens.update(toks)
        for v in m.match(toks):
            assert not set(v.surface.split()) & COCO_MINI_TEXT
            if v.plural:
                plural[v.surface] = classes.fine_words[v.fine]
            else:
                singular.add(v.surface)
    assert plural == COCO_MINI_PLURALS
    assert singular <= set(classes.fine_words)              # a singular visual word is a class-file word
    assert COCO_MINI_TEXT <= tokens                       # the false cases do occur in the captions
    assert len(caps) == 795 and len(singular) > 100


def test_raw_captions_are_tokenized_with_possessives_split_and_numbers_whole():
    from nbt.misc.vocab import tokenize
    assert tokenize("A man's hat, next to 2 DOGS.") == ["a", "man", "'s", "hat", "next", "to", "2", "dogs"]
    assert tokenize("The clock says 8:25; it's a T-shirt") == ["the", "clock", "says", "8:25", "it", "'s", "a", "t", "shirt"]
    assert tokenize("holding an id and cant see") == ["holding", "an", "id", "and", "cant", "see"]


# -- plurals standing alone on a class line, and lemminflect as an oracle ---------------------------------
@pytest.mark.parametrize("plural,singular", [
    ("policemen", "policeman"), ("gentlemen", "gentleman"), ("firemen", "fireman"), ("servicemen", "serviceman"),
    ("grandchildren", "grandchild"), ("taxis", "taxi"), ("skis", "ski"), ("bikinis", "bikini"),
    ("corgis", "corgi"), ("zebus", "zebu")])
def test_a_plural_alone_on_a_class_line_is_a_plural(plural, singular):
    from nbt.misc.plurals import is_plural_noun
    assert is_plural_noun(plural) and plural in plurals(singular) and not is_plural_noun(singular)
    classes = ClassNames(("thing", "other"), (("thing",), ("other", plural)))
    [v] = VisualWordMatcher(classes).match(["two", plural])
    assert (v.surface, v.plural, classes.fine_words[v.fine]) == (plural, 1, plural)
    assert Vocabulary({"1": "UNK"}, classes).plural(plural) == plural       # not "policemens", "taxises"


@pytest.mark.parametrize("word", ["specimen", "abdomen", "omen", "iris", "tennis", "cactus", "bus", "walrus",
                                  "chassis", "human", "ottoman"])
def test_singular_lookalikes_stay_singular(word):
    from nbt.misc.plurals import is_plural_noun
    assert not is_plural_noun(word)


FIXTURES = ROOT / "tests" / "fixtures" / "original_nbt"
CLASS_FILES = [FIXTURES / "coco_class_name.txt", FIXTURES / "flickr30k_class_name.txt", COCO_CLASSES]
# Class words where the plural tables and lemminflect disagree, each reviewed: the tables are right.
REVIEWED = {
    "cattle": "a collective, always plural ('cattle are'); lemminflect gives it no number (lemma = itself)",
    "people": "the plural of person; lemminflect takes it as its own lemma",
    "oxen": "the plural of ox; lemminflect's lexicon has no 'oxen' and takes it as its own lemma",
    "ox": "its plural is 'oxen'; lemminflect's rule gives 'oxes'",
    "corgi": "a singular dog breed; lemminflect lemmatises it as a Latin plural of 'corgus'",
    "pants": "plural-only, one object ('a pair of pants'): the number comes from the context; "
             "lemminflect reads it as the plural of 'pant'",
    "shorts": "plural-only, as 'pants'; lemminflect reads it as the plural of 'short'",
}


def _class_words():
    words = set()
    for f in CLASS_FILES:
        for line in f.read_text().splitlines():
            words |= {" ".join(w.strip().lower().split()) for w in line.split(",")} - {""}
    return sorted(words)


def _disagreement(word: str) -> str | None:
    """How lemminflect (a test oracle only) and misc.plurals differ on a word's last token, or None."""
    from lemminflect import getInflection, getLemma
    from nbt.misc.plurals import is_plural_noun
    last = word.rsplit(" ", 1)[-1]
    lemma = getLemma(last, upos="NOUN")[0]
    theirs_plural, ours_plural = lemma != last, is_plural_noun(word)
    if theirs_plural != ours_plural:
        return f"lemminflect: {'plural of ' + lemma if theirs_plural else 'singular'}; tables: " \
               f"{'plural' if ours_plural else 'singular'}"
    if ours_plural:
        return None if last in {p.rsplit(' ', 1)[-1] for p in plurals(lemma)} else \
            f"plural of {lemma} by lemminflect, not by the tables ({plurals(lemma)})"
    ours = {p.rsplit(" ", 1)[-1] for p in plurals(word)}
    theirs = set(getInflection(last, tag="NNS"))
    return None if ours & theirs else f"plurals: lemminflect {sorted(theirs)}, tables {sorted(ours)}"


def test_lemminflect_agrees_with_the_tables_on_every_class_word_but_the_reviewed_ones():
    words = _class_words()
    assert len(words) > 800                          # the original's COCO + Flickr30k files and ours
    found = {w: d for w in words if (d := _disagreement(w))}
    unreviewed = {w: d for w, d in found.items() if w not in REVIEWED}
    assert not unreviewed, f"review these (fix misc/plurals.py, or list them with a reason): {unreviewed}"
    assert set(found) == set(REVIEWED)               # each reviewed entry still disagrees
