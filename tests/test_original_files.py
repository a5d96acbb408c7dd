"""The original's released data files (tests/fixtures/original_nbt: its class-name files whole, its
robust and NOC split files cut to coco-mini's ids) as a user who comes from it brings them, and
DCC's NOC F1: the split files through prepro, the class file's duplicate words, the held-out
classes of a dic without a list, and coco-mini end to end (prepro, one short epoch, CBS novel)."""
import json
import re

import pytest

from conftest import COCO_MINI, ROOT, needs_coco_mini
from nbt.misc.config import options_from_dict
from nbt.misc.io import DataError
from nbt.misc.vocab import ClassNames
from nbt.prepro import prepro_det, prepro_dic_coco

FIX = ROOT / "tests" / "fixtures" / "original_nbt"
CLASSES = FIX / "coco_class_name.txt"
ANN = COCO_MINI / "annotations"
DCC_EIGHT = ["bottle", "bus", "couch", "microwave", "pizza", "tennis racket", "suitcase", "zebra"]


def _read(path):
    return json.loads(path.read_text())


def _prepro(out, *extra):
    return prepro_dic_coco.main([
        "--captions_json", str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json"),
        "--class_name_file", str(CLASSES), "--output_dic", str(out / "dic.json"),
        "--output_cap", str(out / "cap.json"), "--word_count_threshold", "1", "--quiet", *extra])


def _ids(entries):
    return {int(e["img_id"]) if isinstance(e, dict) else int(e) for e in entries}


# -- split files ------------------------------------------------------------------------------------
@needs_coco_mini
def test_originals_robust_split_file_puts_each_image_where_it_says(tmp_path):
    split = _read(FIX / "split_robust_coco.json")
    assert isinstance(split["train_id"][0], dict)                  # the original's {"img_id": N} entries
    assert _prepro(tmp_path, "--split", "robust", "--split_file", str(FIX / "split_robust_coco.json")) == 0
    got = {im["id"]: im["split"] for im in _read(tmp_path / "dic.json")["images"]}
    want = {i: name for name in ("train", "val", "test") for i in _ids(split[f"{name}_id"])}
    assert len(got) == 159 and got == want


@needs_coco_mini
def test_originals_noc_split_file_holds_out_dccs_eight_and_merges_the_train_halves(tmp_path, capsys):
    split = _read(FIX / "split_noc_coco.json")
    assert "held_out" not in split and set(split["val"]) <= set(split["val_train"])
    assert _prepro(tmp_path, "--split", "noc", "--split_file", str(FIX / "split_noc_coco.json")) == 0
    dic = _read(tmp_path / "dic.json")
    assert dic["held_out"] == DCC_EIGHT
    said = [line for line in capsys.readouterr().out.splitlines() if "held-out classes" in line]
    assert said == [f"{FIX / 'split_noc_coco.json'}: the original's NOC split (no held-out list; val within "
                    f"val_train, test within test_train): held-out classes are DCC's eight: {', '.join(DCC_EIGHT)}"]
    got = {im["id"]: im["split"] for im in dic["images"]}
    want = {int(i): "rest" for i in got}                   # in none of the five dicts: unused, as the original
    for name, keys in (("test", ("test", "test_train")), ("val", ("val", "val_train")), ("train", ("train",))):
        want.update({int(i): name for k in keys for i in split[k]})
    assert got == want and sum(s == "rest" for s in got.values()) == 5


@needs_coco_mini
def test_another_dcc_style_file_counts_only_train_captions_as_seen(tmp_path, capsys):
    """The original's file less one novel id in val_train is no longer the original's: its held-out
    classes are inferred, and val_train / test_train captions, which hold the novel images in the
    original's layout, do not count as seen (when they did, pizza, bus ... were "seen")."""
    split = _read(FIX / "split_noc_coco.json")
    split["val_train"].pop(next(iter(split["val"])))
    (tmp_path / "dcc.json").write_text(json.dumps(split))
    assert _prepro(tmp_path, "--split", "noc", "--split_file", str(tmp_path / "dcc.json")) == 0
    held = _read(tmp_path / "dic.json")["held_out"]
    assert {"bus", "couch", "microwave", "pizza", "suitcase", "zebra"} <= set(held)
    assert "held-out classes inferred from the split" in capsys.readouterr().out


@pytest.mark.parametrize("scheme,content,key", [
    ("robust", {"train_id": [{"id": 1}], "val_id": [], "test_id": []}, "train_id"),
    ("robust", {"train_id": [], "val_id": [], "test": []}, "test_id"),
    ("robust", {"train_id": [], "val_id": "1,2", "test_id": []}, "val_id"),
    ("noc", {"train": {}, "val": {}, "val_train": {}, "test": {"x": 1}, "test_train": {}}, "test"),
    ("noc", {"train": {}, "val": {}, "test": {}, "test_train": {}}, "val_train"),
    ("noc", {"train": {}, "val": {}, "val_train": {}, "test": {}, "test_train": {}, "held_out": "bus"}, "held_out"),
])
def test_malformed_split_files_fail_with_one_line_naming_file_and_key(tmp_path, capsys, scheme, content, key):
    karpathy = {"images": [{"cocoid": 1, "filepath": "val2014", "filename": "a.jpg", "split": "train",
                            "sentences": [{"tokens": ["a", "dog"]}]}]}
    (tmp_path / "k.json").write_text(json.dumps(karpathy))
    (tmp_path / "split.json").write_text(json.dumps(content))
    assert prepro_dic_coco.main(["--input_json", str(tmp_path / "k.json"), "--class_name_file", str(CLASSES),
                                 "--split", scheme, "--split_file", str(tmp_path / "split.json"),
                                 "--output_dic", str(tmp_path / "d.json"), "--output_cap", str(tmp_path / "c.json"),
                                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("note:")]
    assert len(err) == 1 and "split.json" in err[0] and f"'{key}'" in err[0], err
    assert not (tmp_path / "d.json").exists()


# -- the class-name file ----------------------------------------------------------------------------------
def test_originals_class_file_resolves_duplicates_as_the_original_in_one_line(tmp_path, capsys):
    copy = tmp_path / "coco_class_name.txt"
    copy.write_bytes(CLASSES.read_bytes())
    classes = ClassNames.read(copy)
    owner = {w: classes.names[c - 1] for w, c in classes.word_to_class().items()}
    assert {w: owner[w] for w in ("surfboard", "cattle", "ewe", "recliner")} == \
        {"surfboard": "surfboard", "cattle": "cow", "ewe": "cow", "recliner": "couch"}
    assert len(classes.fine_words) == len(set(classes.fine_words)) == 409      # the original's fg_size
    assert classes.words[classes.index("surfboard") - 1][0] == "surfboard"
    assert "surfboard" not in classes.words[classes.index("boat") - 1]
    assert capsys.readouterr().err.splitlines() == [
        "note: coco_class_name.txt: 4 words listed under more than one class, resolved as the original did "
        "(the last line wins; a class's own name stays with its class): surfboard\u2192surfboard "
        "(its own class), cattle\u2192cow, ewe\u2192cow, recliner\u2192couch"]
    ClassNames.read(copy)                                        # once per file
    assert capsys.readouterr().err == ""


def test_a_class_name_stays_with_its_own_class_even_before_a_later_line(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("boat, ship, surfboard\nsurfboard, longboard\ndog, puppy\nanimal, dog, cattle\ncow, cattle\n")
    classes = ClassNames.read(p)
    owner = {w: classes.names[c - 1] for w, c in classes.word_to_class().items()}
    assert (owner["surfboard"], owner["dog"], owner["cattle"]) == ("surfboard", "dog", "cow")
    assert classes.words == (("boat", "ship"), ("surfboard", "longboard"), ("dog", "puppy"), ("animal",),
                             ("cow", "cattle"))
    p.write_text("dog, puppy\ncat\ndog, hound\n")
    with pytest.raises(DataError, match=r"c.txt:3: class 'dog' is named twice \(also on line 1\)"):
        ClassNames.read(p)


def test_the_projects_own_class_file_reads_line_by_line_without_a_note(capsys):
    own = ROOT / "data" / "coco" / "coco_class_name.txt"
    classes = ClassNames.read(own)
    lines = [list(dict.fromkeys(w.strip() for w in line.split(",") if w.strip()))
             for line in own.read_text().splitlines() if line.strip()]
    assert [list(ws) for ws in classes.words] == lines and list(classes.names) == [ws[0] for ws in lines]
    assert capsys.readouterr().err == ""


# -- a dic of the original's (no held_out list) in a NOC run ---------------------------------------------
def test_noc_run_on_a_dic_without_held_out_list_uses_dccs_eight_with_a_notice(capsys):
    from nbt.misc.dataset import held_out_classes
    classes = ClassNames.read(CLASSES)
    capsys.readouterr()
    dic = {"ix_to_word": {"1": "a"}, "images": []}                   # the original's keys only
    got = held_out_classes(dic, classes, noc=True, source="theirs/dic_coco.json")
    assert [classes.names[c - 1] for c in got] == DCC_EIGHT
    err = capsys.readouterr().err.splitlines()
    assert err == ["note: theirs/dic_coco.json has no 'held_out' list (a dic of the original's): NOC "
                   f"evaluation holds out DCC's eight objects: {', '.join(DCC_EIGHT)}"]
    assert held_out_classes(dic, classes) == []                     # no NOC run: nothing held out
    assert held_out_classes({**dic, "held_out": []}, classes, noc=True) == []      # ours: its own list
    flickr = ClassNames.read(FIX / "flickr30k_class_name.txt")
    with pytest.raises(DataError, match="no class names DCC's held-out object 'microwave'"):
        held_out_classes(dic, flickr, noc=True)


# -- end to end on coco-mini ----------------------------------------------------------------------------------
# DCC's eval_sentences.py rm_word_dict, written again here for an independent check
DCC_WORDS = {"bus": {"bus", "busses"}, "bottle": {"bottle", "bottles"}, "couch": {"couch", "couches", "sofa", "sofas"},
             "microwave": {"microwave", "microwaves"}, "pizza": {"pizza", "pizzas"},
             "racket": {"racket", "rackets", "racquet", "racquets"},
             "suitcase": {"luggage", "luggages", "suitcase", "suitcases"}, "zebra": {"zebra", "zebras"}}


def _dcc_f1_by_hand(preds: dict[int, str], refs: dict[int, list[str]], words: set[str]) -> float:
    """DCC's F1 written again from eval_sentences.py, for the end-to-end check."""
    def said(s):
        return bool(words & set(re.sub(r"[^A-Za-z0-9\s]+", "", s.lower()).split()))
    novel = {k for k, r in refs.items() if any(said(s) for s in r)}
    tp = sum(len(refs[k]) for k in novel if said(preds[k]))
    fn = sum(len(refs[k]) for k in novel if not said(preds[k]))
    fp = sum(len(refs[k]) for k in refs if k not in novel and said(preds[k]))
    return 0.0 if not tp else 2 * tp / (2 * tp + fp + fn)


@needs_coco_mini
def test_coco_mini_with_the_originals_files_end_to_end(tmp_path, monkeypatch):
    from nbt.misc.session import inference, train
    monkeypatch.chdir(tmp_path)                                     # eval_results/ goes here
    monkeypatch.setattr("nbt.misc.metrics.java_available", lambda: False)    # no METEOR: 9 Java starts
    assert _prepro(tmp_path, "--split", "robust", "--split_file", str(FIX / "split_robust_coco.json")) == 0
    robust = {im["id"]: im["split"] for im in _read(tmp_path / "dic.json")["images"]}
    assert sum(s == "test" for s in robust.values()) == 24
    assert _prepro(tmp_path, "--split", "noc", "--split_file", str(FIX / "split_noc_coco.json")) == 0
    dic = _read(tmp_path / "dic.json")
    assert dic["held_out"] == DCC_EIGHT
    assert prepro_det.main(["--input_dic", str(tmp_path / "dic.json"), "--class_name_file", str(CLASSES),
                            "--output_h5", str(tmp_path / "det.h5"),
                            "--from_json", str(COCO_MINI / "detections_fastestdet.json")]) == 0
    opt = dict(dataset="coco", input_json=str(tmp_path / "cap.json"), input_dic=str(tmp_path / "dic.json"),
               image_path=str(COCO_MINI), proposal_h5=str(tmp_path / "det.h5"),
               instances_json=[str(ANN / "instances_train2017.json"), str(ANN / "instances_val2017.json")],
               class_name_file=str(CLASSES), cnn_backend="tiny", pretrained_cnn=False, finetune_cnn=True,
               att_feat_size=16, rnn_size=32, input_encoding_size=16, att_hid_size=16, class_emb_size=8,
               loc_emb_size=8, image_size=72, image_crop_size=64, seq_length=12, max_proposal=20, batch_size=8,
               num_workers=0, cuda=False, max_epochs=1, train_max_images=8, val_every_epoch=0, eval_split="",
               disp_interval=0, checkpoint_path=str(tmp_path / "save"), id="noc_mini", decode_noc=True)
    run = train(options_from_dict(opt))["dir"]
    res = inference(options_from_dict({**opt, "start_from": run, "cbs": True, "cbs_mode": "novel",
                                       "cbs_tag_size": 1, "beam_size": 1}))
    split = _read(FIX / "split_noc_coco.json")
    test_ids = {int(i) for k in ("test", "test_train") for i in split[k]}
    assert {p["image_id"] for p in res["predictions"]} == test_ids           # 42 images: test and test_train
    noc = res["noc"]
    assert noc["metric"] == "DCC F1" and noc["sets"] == "derived from the test references (DCC's rule)"
    assert list(noc["per_class"]) == DCC_EIGHT                  # coco-mini's test images hold all eight
    refs = {k: [" ".join(c) for c in cs] for k, cs in
            zip((im["id"] for im in dic["images"]), _read(tmp_path / "cap.json")) if k in test_ids}
    preds = {p["image_id"]: p["caption"] for p in res["predictions"]}
    novel = {"bus": 2, "suitcase": 2, "pizza": 2, "microwave": 1, "zebra": 1, "tennis racket": 1, "bottle": 1,
             "couch": 1}                                        # counted from the raw captions by hand
    for name, e in noc["per_class"].items():
        assert e["novel_images"] == novel[name] and e["train_images"] == 42 - novel[name]
        assert e["f1"] == pytest.approx(_dcc_f1_by_hand(preds, refs, DCC_WORDS[e["dcc_object"]]))
    assert noc["average"]["f1"] == pytest.approx(sum(e["f1"] for e in noc["per_class"].values()) / 8)
