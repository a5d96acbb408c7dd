"""Flickr30k with its grounding: Flickr30k Entities' own files and the original NBT's Flickr files.

The readers are tested on examples in the exact release formats (see SOURCES):
- `DOC_SENTENCES` / `DOC_XML`: image 1000092795 (Sentences/ and Annotations/), chain ids 1..10;
- `REAL_SENTENCES`: lines of Entities' Sentences files with their real chain ids (a notvisual
  phrase, a phrase of two types, a line without a final period);
- `ORIGINAL_*`: the original's dic_flickr30k.json / cap_flickr30k.json, written after its
  misc/dataloader_flickr30k.py (its released files are not available);
and end to end on a small image set in the same formats written by tests/flickr_data.py (which
imports nothing of the project): prepro -> detections -> train -> evaluate (grounding against the
Entities boxes) -> demo, through cfgs/normal_flickr_res101.yml, as a user types the commands.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import ROOT
from flickr_data import write_dataset
from nbt.misc.config import options_from_dict
from nbt.misc.dataset import CaptionDataset, DataBundle
from nbt.misc.io import DataError
from nbt.misc.vocab import ClassNames, VisualWordMatcher, tokenize
from nbt.prepro import flickr30k, prepro_det, prepro_dic_flickr

CLASS_FILE = ROOT / "data" / "flickr30k" / "flickr30k_class_name.txt"
SOURCES = """
DOC_SENTENCES, DOC_XML: Sentences/1000092795.txt and Annotations/1000092795.xml as a public README
describing the Flickr30k Entities release quotes them (its chain ids renumbered 1..10, objects elided
by the comment); found through a code index that did not name the repository: cited for the format.
REAL_SENTENCES: github.com/X1AOX1A/Datasets, Flickr30k_Entities/data_samples.md (commit d5e0d57),
images 36979, 65567 and 81641 of Flickr30k Entities (Plummer et al.).
"""

DOC_SENTENCES = """\
[/EN#1/people Two young guys] with [/EN#2/bodyparts shaggy hair] look at [/EN#3/bodyparts their hands] while hanging out in [/EN#8/scene the yard] .
[/EN#1/people Two young , White males] are outside near [/EN#4/scene many bushes] .
[/EN#1/people Two men] in [/EN#5/clothing green shirts] are standing in [/EN#9/scene a yard] .
[/EN#6/people A man] in [/EN#7/clothing a blue shirt] standing in [/EN#9/scene a garden] .
[/EN#1/people Two friends] enjoy [/EN#10/other time] spent together .
"""

DOC_XML = """\
<annotation>
\t<filename>1000092795.jpg</filename>
\t<size>
\t\t<width>333</width>
\t\t<height>500</height>
\t\t<depth>3</depth>
\t</size>
\t<object>
\t\t<name>1</name>
\t\t<bndbox>
\t\t\t<xmin>159</xmin>
\t\t\t<ymin>125</ymin>
\t\t\t<xmax>219</xmax>
\t\t\t<ymax>335</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox>
\t\t\t<xmin>1</xmin>
\t\t\t<ymin>220</ymin>
\t\t\t<xmax>211</xmax>
\t\t\t<ymax>473</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>4</name>
\t\t<bndbox>
\t\t\t<xmin>276</xmin>
\t\t\t<ymin>215</ymin>
\t\t\t<xmax>332</xmax>
\t\t\t<ymax>337</ymax>
\t\t</bndbox>
\t</object>
\t<object>
\t\t<name>1</name>
\t\t<name>6</name>
\t\t<bndbox>
\t\t\t<xmin>197</xmin>
\t\t\t<ymin>110</ymin>
\t\t\t<xmax>261</xmax>
\t\t\t<ymax>373</ymax>
\t\t</bndbox>
\t</object>
  <!-- ... -->
\t<object>
\t\t<name>10</name>
\t\t<scene>0</scene>
\t\t<nobndbox>1</nobndbox>
\t</object>
</annotation>
"""

REAL_SENTENCES = """\
[/EN#137644/people A group of friends] playing [/EN#137645/other cards] and trying to bluff [/EN#0/notvisual each other] into making [/EN#137650/other a terrible mistake] .
[/EN#255543/people A woman] holds [/EN#255545/bodyparts/people a man 's arm] at [/EN#255549/scene a formal event] .
[/EN#279867/people A man] doing [/EN#279867/other gymnastic stunts]
"""


@pytest.fixture(scope="module")
def classes():
    return ClassNames.read(CLASS_FILE)


# -- the shipped class file -----------------------------------------------------------------------
def test_the_shipped_class_file_is_the_originals_and_every_line_is_one_class(classes):
    assert hashlib.sha256(CLASS_FILE.read_bytes()).hexdigest() == \
        "7670c6cbaed0b8ebede501c1b5de0d72a9cd46a943db665a710998894f7c9499"      # data/flickr30k/README.md
    lines = CLASS_FILE.read_text().splitlines()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                   # no duplicate, nothing dropped
        read = ClassNames.read(CLASS_FILE)
    assert len(lines) == read.num_classes == 480
    assert [list(w) for w in read.words] == [[line] for line in lines]
    assert list(read.names) == lines


def test_real_flickr_captions_give_their_visual_words(classes):
    m = VisualWordMatcher(classes)

    def words(text):
        return [(v.surface, classes.names[v.cls - 1], v.plural) for v in m.match(tokenize(text))]
    assert words("Several men play cards while around a green table .") == \
        [("men", "man", 1), ("cards", "card", 1), ("table", "table", 0)]
    assert words("Two young guys with shaggy hair look at their hands while hanging out in the yard .") == \
        [("guys", "guy", 1), ("hair", "hair", 0), ("hands", "hand", 1), ("yard", "yard", 0)]
    assert words("A little girl wearing a pink shirt and backpack is pushing a little boy in a blue stroller .") == \
        [("girl", "girl", 0), ("pink", "pink", 0), ("shirt", "shirt", 0), ("backpack", "backpack", 0),
         ("boy", "boy", 0), ("stroller", "stroller", 0)]
    # "people" is a class of its own in the original's file, not person's plural
    assert words("Many people watching") == [("people", "people", 1)]


# -- Flickr30k Entities' files ----------------------------------------------------------------------
def test_sentences_parse_as_the_official_reader_reads_them(tmp_path):
    path = tmp_path / "36979.txt"
    path.write_text(REAL_SENTENCES)
    s1, s2, s3 = flickr30k.read_sentences(path)
    assert s1.words[:4] == ("A", "group", "of", "friends") and s1.words[-1] == "."
    assert [(p.first, p.end, p.entity, p.types) for p in s1.phrases] == [
        (0, 4, "137644", ("people",)), (5, 6, "137645", ("other",)), (10, 12, "0", ("notvisual",)),
        (14, 17, "137650", ("other",))]
    assert s2.phrases[1] == flickr30k.Phrase(3, 7, "255545", ("bodyparts", "people"))
    assert " ".join(s2.words[3:7]) == "a man 's arm"
    assert s3.words == ("A", "man", "doing", "gymnastic", "stunts") and s3.phrases[1].end == 5


def test_annotation_xml_parses_boxes_shared_names_and_the_nobox_flag(tmp_path):
    path = tmp_path / "1000092795.xml"
    path.write_text(DOC_XML)
    ann = flickr30k.read_annotation(path)
    assert (ann.filename, ann.width, ann.height) == ("1000092795.jpg", 333, 500)
    # 1-based pixels in the file, 0-based here (the official reader subtracts 1)
    assert ann.boxes == {"1": ((158, 124, 218, 334), (196, 109, 260, 372)),
                         "4": ((0, 219, 210, 472), (275, 214, 331, 336)), "6": ((196, 109, 260, 372),)}
    assert ann.nobox == {"10"} and ann.scene == set()


def test_a_phrase_grounds_its_head_word_in_its_entitys_boxes(tmp_path, classes):
    (tmp_path / "s.txt").write_text(DOC_SENTENCES)
    (tmp_path / "a.xml").write_text(DOC_XML)
    im = flickr30k.entities_image(1000092795, "train", flickr30k.read_sentences(tmp_path / "s.txt"),
                                  flickr30k.read_annotation(tmp_path / "a.xml"), VisualWordMatcher(classes))
    got = [[(toks[m.pos], m.entity, m.word) for m in ms] for toks, ms in zip(im.captions, im.mentions)]
    # hair, hands, yard, shirts, garden, time: their entities have no box here -> text
    assert got == [[("guys", "1", "guy")], [("males", "1", "male"), ("bushes", "4", "bush")],
                   [("men", "1", "man")], [("man", "6", "man")], [("friends", "1", "friend")]]
    assert im.captions[1] == ["two", "young", "white", "males", "are", "outside", "near", "many", "bushes"]


def test_only_the_head_of_a_boxed_phrase_is_grounded(tmp_path, classes):
    """"[A group of friends]" grounds friends, not group; "[a man 's arm]" the arm; the class word
    "other" of the notvisual "[each other]" stays text."""
    (tmp_path / "s.txt").write_text(REAL_SENTENCES)
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
    objs = "".join(f"<object><name>{c}</name>{box}</object>" for c in ("137644", "137645", "255543", "255545"))
    (tmp_path / "a.xml").write_text(f"<annotation><size><width>10</width><height>10</height></size>{objs}"
                                    "<object><name>137650</name><nobndbox>1</nobndbox><scene>0</scene></object>"
                                    "<object><name>255549</name><nobndbox>0</nobndbox><scene>1</scene></object>"
                                    "</annotation>")
    ann = flickr30k.read_annotation(tmp_path / "a.xml")
    assert ann.nobox == {"137650"} and ann.scene == {"255549"} and "255549" not in ann.boxes
    im = flickr30k.entities_image(36979, "train", flickr30k.read_sentences(tmp_path / "s.txt"), ann,
                                  VisualWordMatcher(classes))
    got = [[(toks[m.pos], m.entity) for m in ms] for toks, ms in zip(im.captions, im.mentions)]
    assert got == [[("friends", "137644"), ("cards", "137645")], [("woman", "255543"), ("arm", "255545")], []]


BAD_SENTENCES = [
    ("[/EN#1/people A man] rides [/EN#2/vehicles a bike .", "phrase [/EN#2/... is not closed"),
    ("[EN#1/people A man] .", "is not a phrase start"),
    ("[/EN#1/people A [/EN#2/other man]] .", "starts inside another phrase"),
    ("A man] .", "closes no phrase"),
]
BAD_XML = [
    ("<annotation><size><width>10</width>", "not well-formed XML"),
    ("<annotation><size><height>9</height></size></annotation>", "<size/width> is missing"),
    ("<annotation><size><width>9</width><height>9</height></size><object><name>1</name><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>x</xmax><ymax>4</ymax></bndbox></object></annotation>", "object 0: <xmax> is 'x'"),
    ("<annotation><size><width>9</width><height>9</height></size><object><bndbox/></object></annotation>",
     "object 0 has no <name>"),
    ("<annotation><size><width>9</width><height>9</height></size><object><name>3</name></object></annotation>",
     "object 0 has neither <bndbox> nor <nobndbox> and <scene>"),
    ("<annotation><size><width>9</width><height>9</height></size><object><name>1</name><bndbox><xmin>5</xmin>"
     "<ymin>1</ymin><xmax>2</xmax><ymax>4</ymax></bndbox></object></annotation>", "object 0 has xmax < xmin"),
]


@pytest.mark.parametrize("text,message", BAD_SENTENCES)
def test_a_malformed_sentence_file_is_a_one_line_error_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "123.txt"
    path.write_text("[/EN#5/people A woman] .\n" + text + "\n")
    with pytest.raises(DataError) as err:
        flickr30k.read_sentences(path)
    assert f"{path}:2: " in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text,message", BAD_XML)
def test_a_malformed_annotation_file_is_a_one_line_error_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "123.xml"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        flickr30k.read_annotation(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_split_lists_and_karpathys_file_give_the_split(tmp_path):
    (tmp_path / "Sentences").mkdir()
    for name, ids in (("train", "11\n12\n"), ("val", "13\n"), ("test", "14\n")):
        (tmp_path / f"{name}.txt").write_text(ids)
        for i in ids.split():
            (tmp_path / "Sentences" / f"{i}.txt").write_text("")
    assert flickr30k.split_lists(tmp_path) == [(11, "train"), (12, "train"), (13, "val"), (14, "test")]
    karpathy = tmp_path / "dataset_flickr30k.json"
    karpathy.write_text(json.dumps({"images": [{"filename": "12.jpg", "split": "restval"},
                                               {"filename": "14.jpg", "split": "test"}]}))
    assert flickr30k.read_karpathy_split(karpathy, tmp_path) == [(12, "train"), (14, "test"), (11, "rest"), (13, "rest")]
    karpathy.write_text(json.dumps({"images": [{"filename": "12.jpg"}]}))
    with pytest.raises(DataError, match=r"dataset_flickr30k.json: images\[0\] needs 'filename' .* and 'split'"):
        flickr30k.read_karpathy_split(karpathy, tmp_path)
    (tmp_path / "val.txt").write_text("13\nabc\n")
    with pytest.raises(DataError, match=r"val.txt:2: 'abc' is not an image id"):
        flickr30k.split_lists(tmp_path)
    (tmp_path / "val.txt").write_text("12\n")
    with pytest.raises(DataError, match=r"val.txt: image 12 is also in train.txt"):
        flickr30k.split_lists(tmp_path)


def test_a_missing_release_folder_or_file_is_a_one_line_error(tmp_path, capsys):
    ent = tmp_path / "flickr30k_entities"
    args = ["--entities_dir", str(ent), "--output_dic", str(tmp_path / "out" / "d.json"),
            "--output_cap", str(tmp_path / "out" / "c.json"), "--output_instances", str(tmp_path / "out" / "i.json")]
    assert prepro_dic_flickr.main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: {ent / 'Sentences'}: folder not found (unzip Flickr30k "
                                               f"Entities' annotations.zip into {ent})")
    for sub in ("Sentences", "Annotations"):
        (ent / sub).mkdir(parents=True)
    for split in ("train", "val", "test"):
        (ent / f"{split}.txt").write_text("1000092795\n" if split == "train" else "")
    (ent / "Sentences" / "1000092795.txt").write_text(DOC_SENTENCES)
    assert prepro_dic_flickr.main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: file not found: {ent / 'Annotations' / '1000092795.xml'}"
    assert not (tmp_path / "out").exists()


# -- the original's files ----------------------------------------------------------------------------
ORIGINAL_DIC = {"ix_to_word": {"1": "a", "2": "man", "3": "skiing", "4": "UNK"}, "wtod": {"man": 0, "ski": 1},
                "wtol": {"a": "a", "man": "man", "skiing": "ski"},
                "images": [{"split": "train", "file_path": "1000092795.jpg", "id": 1000092795}]}
# misc/dataloader_flickr30k.py: one entry per box; clss the class word, idx the token position
ORIGINAL_CAP = [[{"caption": ["two", "man", "UNK", "skiing"], "clss": ["man", "man", "ski"],
                  "bbox": [[158, 124, 218, 334], [196, 109, 260, 372], [0, 300, 200, 320]], "idx": [1, 1, 3]},
                 {"caption": ["a", "man"], "clss": ["man"], "bbox": [[196, 109, 260, 372]], "idx": [1]},
                 {"caption": ["the", "men"], "clss": ["man", "man"], "bbox": [[196, 109, 260, 372], [158, 124, 218, 334]],
                  "idx": [1, 1]}]]
BAD_ORIGINAL = [
    (lambda c: c[0][0].pop("idx"), "entry 0, caption 0: not a caption {caption, clss, bbox, idx}"),
    (lambda c: c[0][0]["clss"].__setitem__(0, "spaceship"), "clss[0] 'spaceship' is not a word of the class"),
    (lambda c: c[0][0]["idx"].__setitem__(2, 9), "idx[2] 9 is not a token position"),
    (lambda c: c[0][0]["bbox"].__setitem__(1, [1, 2]), "bbox[1] [1, 2] is not [x1, y1, x2, y2]"),
    (lambda c: c[0][0]["bbox"].pop(), "'clss', 'bbox' and 'idx' must be lists of one length"),
    (lambda c: c.append([]), "expected a list of 1 caption lists"),
    (lambda c: c[0].__setitem__(0, "two men"), "entry 0, caption 0: not a caption {caption, clss, bbox, idx}"),
]


def test_a_malformed_original_dic_is_a_one_line_error(tmp_path, capsys):
    args = _original_files(tmp_path)
    dic = json.loads(json.dumps(ORIGINAL_DIC))
    del dic["images"][0]["split"]
    (tmp_path / "dic.json").write_text(json.dumps(dic))
    assert prepro_dic_flickr.main(args) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: {tmp_path / 'dic.json'}: images[0] needs 'id', 'file_path' and 'split'"


def _original_files(tmp_path, cap=None):
    (tmp_path / "man_ski.txt").write_text("man\nski\n")
    (tmp_path / "dic.json").write_text(json.dumps(ORIGINAL_DIC))
    (tmp_path / "cap.json").write_text(json.dumps(ORIGINAL_CAP if cap is None else cap))
    return ["--original_dic", str(tmp_path / "dic.json"), "--original_cap", str(tmp_path / "cap.json"),
            "--class_name_file", str(tmp_path / "man_ski.txt"), "--image_path", str(tmp_path / "none"),
            "--output_dic", str(tmp_path / "out" / "dic.json"), "--output_cap", str(tmp_path / "out" / "cap.json"),
            "--output_instances", str(tmp_path / "out" / "inst.json"), "--output_df", "",
            "--word_count_threshold", "0"]


def test_the_originals_caption_file_converts_entities_by_their_boxes(tmp_path, capsys):
    assert prepro_dic_flickr.main(_original_files(tmp_path)) == 0
    assert "3 of 4 visual words are visual words here too; the others are read as text (e.g. skiing as ski)" \
        in capsys.readouterr().out
    cap = json.loads((tmp_path / "out" / "cap.json").read_text())
    inst = json.loads((tmp_path / "out" / "inst.json").read_text())
    assert cap == [[{"tokens": ["two", "man", "UNK", "skiing"], "refs": [[1, "1"], [3, "2"]]},
                    {"tokens": ["a", "man"], "refs": [[1, "3"]]}, {"tokens": ["the", "men"], "refs": [[1, "1"]]}]]
    boxes = {(a["attributes"]["entity"], a["category_id"]): [] for a in inst["annotations"]}
    for a in inst["annotations"]:
        boxes[(a["attributes"]["entity"], a["category_id"])].append(a["bbox"])
    # the two entries at idx 1 are one visual word with two boxes; "a man" has other boxes: another
    # entity; "the men" has the same two boxes: the same entity
    assert boxes == {("1", 1): [[158, 124, 60, 210], [196, 109, 64, 263]], ("2", 2): [[0, 300, 200, 20]],
                     ("3", 1): [[196, 109, 64, 263]]}
    assert inst["images"] == []                        # no image files: sizes unknown, not zero
    dic = json.loads((tmp_path / "out" / "dic.json").read_text())
    assert dic["images"] == ORIGINAL_DIC["images"] and dic["classes"] == ["man", "ski"]


@pytest.mark.parametrize("damage,message", BAD_ORIGINAL)
def test_a_malformed_original_file_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, damage, message):
    cap = json.loads(json.dumps(ORIGINAL_CAP))
    damage(cap)
    assert prepro_dic_flickr.main(_original_files(tmp_path, cap)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cap.json" in err[0] and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_conversion_never_writes_over_the_originals_files(tmp_path, capsys):
    args = _original_files(tmp_path)
    args[args.index("--output_cap") + 1] = str(tmp_path / "cap.json")
    assert prepro_dic_flickr.main(args) == 2
    assert "is one of the original's files being converted" in capsys.readouterr().err
    assert json.loads((tmp_path / "cap.json").read_text()) == ORIGINAL_CAP


# -- a small dataset in the Entities format, through prepro and the loader ----------------------------
@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    """tests/flickr_data.py's images and files, then prepro_dic_flickr.py (Entities) and prepro_det.py."""
    root = tmp_path_factory.mktemp("flickr") / "data" / "flickr30k"
    write_dataset(root)
    out = root / "prepro"
    assert prepro_dic_flickr.main([
        "--entities_dir", str(root / "flickr30k_entities"), "--class_name_file", str(CLASS_FILE),
        "--output_dic", str(out / "dic.json"), "--output_cap", str(out / "cap.json"),
        "--output_instances", str(out / "inst.json"), "--output_df", str(out / "df.json"),
        "--word_count_threshold", "0", "--quiet"]) == 0
    assert prepro_det.main(["--input_dic", str(out / "dic.json"), "--class_name_file", str(CLASS_FILE),
                            "--output_h5", str(out / "det.h5"), "--from_json", str(root / "detections_flickr.json")]) == 0
    return root


def _options(root, **kw):
    out = root / "prepro"
    values = dict(dataset="flickr30k", input_json=str(out / "cap.json"), input_dic=str(out / "dic.json"),
                  image_path=str(root / "images"), proposal_h5=str(out / "det.h5"),
                  instances_json=[str(out / "inst.json")], class_name_file=str(CLASS_FILE), cnn_backend="tiny",
                  pretrained_cnn=False, image_size=136, image_crop_size=128, num_workers=0)
    values.update(kw)
    return options_from_dict(values)


def test_prepro_keeps_flickr_ids_the_entities_split_and_the_entities_boxes(flickr):
    out, truth = flickr / "prepro", json.loads((flickr / "truth.json").read_text())
    dic = json.loads((out / "dic.json").read_text())
    split = {i: s for s in ("train", "val", "test")
             for i in map(int, (flickr / "flickr30k_entities" / f"{s}.txt").read_text().split())}
    assert {im["id"]: im["split"] for im in dic["images"]} == split
    assert min(split) > 2 ** 32 and all(im["file_path"] == f"{im['id']}.jpg" for im in dic["images"])
    inst = json.loads((out / "inst.json").read_text())
    names = {n: c for c, n in ((c["id"], c["name"]) for c in inst["categories"])}
    got: dict = {}
    for a in inst["annotations"]:
        x, y, w, h = a["bbox"]
        got.setdefault((str(a["image_id"]), a["attributes"]["entity"], a["category_id"]), []).append([x, y, x + w, y + h])
    want = {}
    for i, t in truth.items():
        for chain, e in t["entities"].items():
            want[(i, chain, names[e["class"]])] = e["boxes"]
            if e["alias"]:                              # "a person": the same box, another chain
                want[(i, str(e["alias"]), names["person"])] = e["boxes"]
    assert got == want


def test_scene_nobox_and_notvisual_phrases_ground_nothing(flickr):
    cap = json.loads((flickr / "prepro" / "cap.json").read_text())
    grounded = {c["tokens"][p] for caps in cap for c in caps for p, _ in c["refs"]}
    assert grounded == {"man", "men", "woman", "dog", "dogs", "ball", "car", "person"}
    possessive = [c for caps in cap for c in caps if "'s" in c["tokens"]]      # "[the man 's ball]"
    assert possessive
    for c in possessive:
        i, refs = c["tokens"].index("'s"), {p for p, _ in c["refs"]}
        assert c["tokens"][i - 1:i + 2] == ["man", "'s", "ball"] and i - 1 not in refs and i + 1 in refs


@pytest.mark.parametrize("oracle", [False, True])
def test_each_visual_word_points_only_at_its_own_entitys_boxes(flickr, oracle):
    """"A man next to another man": each "man" has its own man's proposals as positives, never the
    other man's (COCO's rule, any box of the class, would take both)."""
    b = DataBundle.load(_options(flickr, det_oracle=oracle))
    ds = CaptionDataset(b, "train", train=False)             # captions 0..4 of each image, in order
    truth = json.loads((flickr / "truth.json").read_text())
    cap = json.loads((flickr / "prepro" / "cap.json").read_text())
    man = b.classes.index("man")
    checked = 0
    for index in range(len(ds)):
        item = ds[(index, 0)]
        entities = truth[str(item["image_id"])]["entities"]
        if sum(e["class"] == "man" for e in entities.values()) < 2:
            continue
        w, h = item["size"]
        scale = np.array([128 / w, 128 / h] * 2)
        props = item["proposals"][:, :4].numpy()
        for s in range(item["words"].shape[0]):
            refs = dict(cap[int(ds.rows[index])][s]["refs"])            # token position -> entity
            for col in np.flatnonzero(item["vis_cls"][s].numpy() == man):   # one-token words: col = position
                pos = np.flatnonzero(item["pos"][s, col].numpy())
                own = [np.array(box) * scale for box in entities[refs[col]]["boxes"]]
                centres = (props[pos, :2] + props[pos, 2:]) / 2
                assert len(pos) and all(any(o[0] <= x <= o[2] and o[1] <= y <= o[3] for o in own) for x, y in centres)
                checked += 1
    assert checked >= 8


def test_a_grounded_caption_keeps_only_the_visual_words_its_refs_name(classes):
    from nbt.misc.captions import CaptionStore
    m = VisualWordMatcher(classes)
    codes = {"71": 0, "72": 1}
    caps = [[{"tokens": "a man 's ball on the beach".split(), "refs": [[3, "71"], [6, "99"]]},
             "two dogs".split()]]
    store = CaptionStore.build(caps, lambda row, toks: m.match(toks), "cap.json", lambda e: codes.get(e, -1))
    ball, dogs = classes.index("ball"), classes.index("dog")
    # man (no ref) and beach (its entity has no box) are text; a plain caption keeps COCO's matching
    assert store.visual_words(0).tolist() == [[3, 1, ball, 0, classes.fine_words.index("ball"), 0]]
    assert store.visual_words(1).tolist() == [[1, 1, dogs, 1, classes.fine_words.index("dog"), -1]]
    assert store[0] == [caps[0][0]["tokens"], caps[0][1]]
    for bad in ({"tokens": ["a", "man"], "refs": [[2, "71"]]}, {"tokens": ["a"], "refs": [["0", "71"]]}):
        with pytest.raises(DataError, match=r"cap.json: entry 0, caption 0: 'refs' must be"):
            CaptionStore.build([[bad]], lambda row, toks: m.match(toks), "cap.json")


def test_a_crop_that_removes_another_class_keeps_a_grounded_words_object(flickr):
    """A crop that removes a class the caption mentions makes the loader match a plain caption
    again; a grounded caption keeps its rows, each word with its own entity."""
    b = DataBundle.load(_options(flickr, det_oracle=True))
    ds = CaptionDataset(b, "train", train=True)
    row = int(ds.rows[0])
    caps = ds._caption_source(row)
    vw = b.captions.visual_words(int(caps[0]))
    present = {int(vw[0, 2])}                                 # every other class cropped away
    _, _, visual = ds._caption(caps, 0, present, need_text=False)
    assert visual == {int(p): (int(n), int(c), int(pl), int(f), int(r)) for p, n, c, pl, f, r in vw}
    assert all(r >= 0 for *_, r in visual.values())


def test_an_image_without_its_size_gets_no_size_not_zero(tmp_path, classes):
    """(A size of 0 x 0 would clip every proposal of the image away.)"""
    from nbt.misc.annotations import BoxIndex
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({"images": [{"id": 7, "file_name": "7.jpg"}, {"id": 8, "width": 50, "height": 40}],
                                "categories": [{"id": 1, "name": "dog"}], "annotations": []}))
    sizes = BoxIndex.from_files([path], classes).sizes
    assert 7 not in sizes and sizes[8] == (50, 40)


def test_the_loader_sends_a_user_of_the_originals_caption_file_to_the_converter(flickr):
    opt = _options(flickr, input_json=str(flickr / "original" / "cap_flickr30k.json"))
    with pytest.raises(DataError, match=r"cap_flickr30k.json: entry 0, caption 0: .*original's Flickr30k caption "
                                        r"format: convert it with prepro/prepro_dic_flickr.py"):
        DataBundle.load(opt)


def test_the_originals_files_of_the_same_data_give_the_same_grounding(flickr):
    """The original's cap_flickr30k.json of the same images (tests/flickr_data.py writes both):
    converted, its visual words and their positives equal those read from Entities' files."""
    out = flickr / "from_original"
    assert prepro_dic_flickr.main([
        "--original_dic", str(flickr / "original" / "dic_flickr30k.json"),
        "--original_cap", str(flickr / "original" / "cap_flickr30k.json"), "--image_path", str(flickr / "images"),
        "--class_name_file", str(CLASS_FILE), "--output_dic", str(out / "dic.json"),
        "--output_cap", str(out / "cap.json"), "--output_instances", str(out / "inst.json"), "--output_df", "",
        "--word_count_threshold", "0"]) == 0
    a = DataBundle.load(_options(flickr, det_oracle=True))
    b = DataBundle.load(_options(flickr, det_oracle=True, input_json=str(out / "cap.json"),
                                 input_dic=str(out / "dic.json"), instances_json=[str(out / "inst.json")]))
    assert a.boxes.sizes.wh.tolist() == b.boxes.sizes.wh.tolist()
    da, db = CaptionDataset(a, "train", train=False), CaptionDataset(b, "train", train=False)
    for i in range(len(da)):
        x, y = da[(i, 0)], db[(i, 0)]
        assert x["image_id"] == y["image_id"]
        assert np.array_equal(x["vis_cls"], y["vis_cls"]) and np.array_equal(x["plural"], y["plural"])
        # the same positive boxes (proposal order may differ: oracle proposals follow each file's boxes)
        for s, t in zip(*np.nonzero(x["vis_cls"].numpy())):
            px = sorted(map(tuple, x["proposals"][x["pos"][s, t]][:, :5].tolist()))
            py = sorted(map(tuple, y["proposals"][y["pos"][s, t]][:, :5].tolist()))
            assert px == py


# -- end to end, as a user types it ----------------------------------------------------------------
TINY = ["--cnn_backend", "tiny", "--pretrained_cnn", "False", "--finetune_cnn", "True", "--att_feat_size", "32",
        "--rnn_size", "64", "--input_encoding_size", "32", "--att_hid_size", "32", "--class_emb_size", "16",
        "--loc_emb_size", "16", "--image_size", "136", "--image_crop_size", "128", "--num_workers", "0",
        "--cuda", "False", "--batch_size", "4", "--learning_rate", "5e-3", "--grad_clip", "2.0",
        "--drop_prob_lm", "0", "--val_every_epoch", "0", "--disp_interval", "0"]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """data/flickr30k/ as data/README.md lays it out (the Entities release unzipped into
    flickr30k_entities/, the images in images/, the shipped class file), then the commands with
    their defaults: prepro_dic_flickr.py, prepro_det.py, main.py with cfgs/normal_flickr_res101.yml
    (train + test evaluation), demo.py."""
    work = tmp_path_factory.mktemp("flickr_e2e")
    data = work / "data" / "flickr30k"
    write_dataset(data)
    shutil.copy(CLASS_FILE, data / CLASS_FILE.name)
    py = sys.executable
    cfg = str(ROOT / "cfgs" / "normal_flickr_res101.yml")
    steps = [
        ("prepro", [py, str(ROOT / "prepro" / "prepro_dic_flickr.py"), "--word_count_threshold", "0"]),
        ("detections", [py, str(ROOT / "prepro" / "prepro_det.py"), "--input_dic", "data/flickr30k/dic_flickr30k.json",
                        "--class_name_file", "data/flickr30k/flickr30k_class_name.txt",
                        "--output_h5", "data/flickr30k/flickr30k_detection.h5",
                        "--from_json", "data/flickr30k/detections_flickr.json"]),
        ("train", [py, str(ROOT / "main.py"), "--path_opt", cfg, *TINY, "--max_epochs", "20"]),
        ("demo", [py, str(ROOT / "demo.py"), "--start_from", "save/normal_flickr_res101", "--demo_max_images", "2",
                  "--cuda", "False"]),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = {}
    for name, cmd in steps:
        done[name] = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900, env=env)
        if done[name].returncode != 0:
            break
    return work, done


def test_entities_data_goes_through_prepro_train_evaluate_and_demo(e2e):
    work, done = e2e
    for name, r in done.items():
        assert r.returncode == 0, f"{name}: exit {r.returncode}\n{' '.join(r.args)}\n{r.stderr[-3000:]}"
    assert list(done) == ["prepro", "detections", "train", "demo"]
    data = work / "data" / "flickr30k"
    for f in ("dic_flickr30k.json", "cap_flickr30k.json", "instances_flickr30k.json", "flickr30k-train-df.json",
              "flickr30k_detection.h5"):
        assert (data / f).is_file(), f
    test_ids = [int(i) for i in (data / "flickr30k_entities" / "test.txt").read_text().split()]
    shown = sorted((work / "visu").glob("*.jpg"))
    assert [p.stem for p in shown] == [str(i) for i in test_ids[:2]]


def test_the_grounding_report_is_measured_on_the_entities_boxes(e2e):
    """The results' grounding accuracy equals one recomputed here from its grounded boxes and the
    generator's truth (an entity box of the word's class at IoU >= 0.5); plural accuracy is read
    from the entities (annotated groups), and the image ids are Flickr's."""
    work, done = e2e
    if done.get("train") is None or done["train"].returncode != 0:
        pytest.fail("the run did not train (see test_entities_data_goes_through_...)")
    res = json.loads((work / "eval_results" / "normal_flickr_res101_test_greedy.json").read_text())
    data = work / "data" / "flickr30k"
    truth = json.loads((data / "truth.json").read_text())
    test_ids = [int(i) for i in (data / "flickr30k_entities" / "test.txt").read_text().split()]
    assert sorted(x["image_id"] for x in res["imgToEval"]) == sorted(test_ids)
    g = res["grounding"]
    assert g["visual_words"] > 0
    assert g["plural_ground_truth"] == "annotated groups" and g["fine_grained_ground_truth"] == "annotated kinds"
    right = 0
    for x in res["imgToEval"]:
        boxes = [(e["class"], b) for e in truth[str(x["image_id"])]["entities"].values() for b in e["boxes"]]
        boxes += [("person", b) for e in truth[str(x["image_id"])]["entities"].values() if e["alias"]
                  for b in e["boxes"]]
        for w in x["grounding"]:
            right += any(c == w["class"] and _iou(w["box"], b) >= 0.5 for c, b in boxes)
    assert g["grounding_accuracy"] == pytest.approx(right / g["visual_words"])


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0
