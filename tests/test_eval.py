"""Caption metrics against published values, NOC F1 and the grounding report."""
import json
from types import SimpleNamespace

import pytest

from conftest import require_java
from nbt.misc.metrics import score_captions


def test_metrics_match_published_nlg_eval_values(caption_metrics):
    """All of nlg-eval's published scores, METEOR included (Java)."""
    require_java()
    hyp = (caption_metrics / "hyp.txt").read_text().strip().splitlines()
    r1 = (caption_metrics / "ref1.txt").read_text().strip().splitlines()
    r2 = (caption_metrics / "ref2.txt").read_text().strip().splitlines()
    refs = {i: [r1[i].strip(), r2[i].strip()] for i in range(len(hyp))}
    hyps = {i: hyp[i].strip() for i in range(len(hyp))}
    overall, per_image = score_captions(refs, hyps, meteor=True, pretokenized=True)
    expected = json.loads((caption_metrics / "expected_scores.json").read_text())
    assert "METEOR" in expected
    for k, v in expected.items():
        assert round(v - overall[k], 5) == 0, (k, overall[k], v)
    assert set(per_image) == {0, 1} and "CIDEr" in per_image[0]


def test_scoring_prints_nothing_and_leaves_no_pipe_open(capsys):
    """pycocoevalcap's BLEU prints its length counts and its METEOR leaves pipes open: an
    evaluation's output is the project's table only."""
    import gc
    import warnings
    require_java()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        overall, _ = score_captions({1: ["a red ring", "a ring"]}, {1: "a red ring"}, meteor=True)
        gc.collect()                                        # METEOR's __del__: its process and pipes
    assert overall["METEOR"] is not None and capsys.readouterr().out == ""
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_spice_is_skipped_not_crashing():
    with pytest.warns(UserWarning, match="SPICE"):
        overall, _ = score_captions({1: ["a dog runs"], 2: ["a cat sits"]}, {1: "a dog runs", 2: "a cat"},
                                    meteor=False, spice=True)
    assert overall["SPICE"] is None and overall["Bleu_1"] > 0


def _bundle():
    from nbt.misc.vocab import ClassNames, Vocabulary
    classes = ClassNames(("circle", "hexagon"), (("circle", "ring", "disc"), ("hexagon", "nut", "cell")))
    vocab = Vocabulary({"1": "a", "2": "UNK"}, classes, {"nut": "nuts", "cell": "cells", "hexagon": "hexagons",
                                                           "circle": "circles", "ring": "rings", "disc": "discs"})
    return SimpleNamespace(classes=classes, vocab=vocab)


def test_noc_f1_of_classes_that_are_not_dccs_objects_uses_the_class_file_words():
    from nbt.misc.evaluation import noc_scores
    refs = {1: ["a red nut"], 2: ["two blue cells here"], 3: ["a ring"], 4: ["a disc"]}
    preds = {1: "a nut", 2: "a ring", 3: "two hexagons", 4: "a disc"}
    out = noc_scores(preds, refs, [2], _bundle(), meteor=False)
    e = out["per_class"]["hexagon"]
    # positives: images 1, 2; predicted: 1, 3 -> tp 1, fp 1, fn 1
    assert e["precision"] == 0.5 and e["recall"] == 0.5 and e["f1"] == 0.5 and e["novel_images"] == 2
    assert out["average"]["f1"] == 0.5 and out["metric"] == "class-file F1"


# DCC's F1 worked by hand (eval_sentences.py F1: lower case, drop every character outside
# [A-Za-z0-9 whitespace]; tp / fn over the novel images, fp over the train images, each image once
# per reference caption; F1 = 0 when tp = 0).
DCC_REFS = {
    1: ["A couch in a room.", "a sofa", "a room"],          # novel for couch (3 references)
    2: ["Two sofas!", "sofas and a dog"],                   # novel (2)
    3: ["a chair", "a seat", "a chair", "a chair", "a bench"],   # train (5)
    4: ["a dog on a bed"],                                  # train (1)
    5: ["a couch-potato", "a man"],                         # train (2): "couchpotato" is no couch
    6: ["two buses", "a bus stop"],                         # novel for bus through "bus" (2)
}
DCC_PREDS = {1: "A Couch.", 2: "a chair", 3: "a sofa, by a chair", 4: "a dog", 5: "the couch's cushion",
             6: "two buses"}


def _dcc_bundle():
    from nbt.misc.vocab import ClassNames, Vocabulary
    classes = ClassNames(("couch", "bus", "zebra"), (("couch", "sofa"), ("bus", "minibus"), ("zebra",)))
    return SimpleNamespace(classes=classes, vocab=Vocabulary({"1": "a", "2": "UNK"}, classes))


def test_dcc_f1_parity_with_a_hand_computed_example():
    from nbt.misc.evaluation import noc_scores
    preds = dict(DCC_PREDS)
    out = noc_scores(preds, DCC_REFS, [1, 2, 3], _dcc_bundle(), meteor=False)
    assert out["metric"] == "DCC F1" and out["sets"] == "derived from the test references (DCC's rule)"
    couch = out["per_class"]["couch"]
    # said: 1 ("a couch"), 3 ("a sofa by a chair"); not 5 ("the couchs cushion")
    # tp = 3 (image 1), fn = 2 (image 2), fp = 5 (image 3); P = 3/8, R = 3/5, F1 = 6/13
    assert (couch["tp"], couch["fn"], couch["fp"]) == (3, 2, 5)
    assert couch["precision"] == 3 / 8 and couch["recall"] == 3 / 5
    assert couch["f1"] == pytest.approx(6 / 13)
    assert (couch["novel_images"], couch["train_images"]) == (2, 4)
    bus = out["per_class"]["bus"]          # DCC's list is (bus, busses): "two buses" is not said
    assert (bus["tp"], bus["fn"], bus["fp"], bus["f1"]) == (0, 2, 0, 0.0)
    zebra = out["per_class"]["zebra"]      # no novel image at all: F1 0
    assert (zebra["tp"], zebra["novel_images"], zebra["f1"]) == (0, 0, 0.0)
    assert out["average"]["f1"] == pytest.approx(6 / 13 / 3)


def test_dccs_annotation_files_give_the_sets_when_present(tmp_path):
    from nbt.misc.evaluation import noc_scores
    from nbt.misc.io import DataError

    def write(obj, part, ids):
        (tmp_path / f"captions_split_set_{obj}_val_test_{part}2014.json").write_text(json.dumps(
            {"images": [{"id": i} for i in ids], "annotations": [
                {"image_id": i, "id": n, "caption": c} for n, (i, c) in
                enumerate((i, c) for i in ids for c in DCC_REFS.get(i, ["a cat"]))]}))
    write("couch", "novel", [1, 2, 4])           # DCC's file says image 4 is novel (its captions here do not)
    write("couch", "train", [3, 5, 6, 7])        # 7: not captioned by this run
    preds = dict(DCC_PREDS)
    out = noc_scores(preds, DCC_REFS, [1], _dcc_bundle(), meteor=False, dcc_annotations=str(tmp_path))
    assert out["sets"] == f"DCC's annotation files in {tmp_path}"
    couch = out["per_class"]["couch"]
    assert (couch["tp"], couch["fn"], couch["fp"], couch["uncaptioned_images"]) == (3, 3, 5, 1)
    with pytest.raises(DataError, match="captions_split_set_bus_val_test_novel2014.json"):
        noc_scores(preds, DCC_REFS, [2], _dcc_bundle(), meteor=False, dcc_annotations=str(tmp_path))


def test_grounding_report_counts():
    from nbt.misc.evaluation import CaptionEvaluator
    from nbt.misc.slot_filling import Caption
    b = _bundle()
    b.captions = [[["a", "ring"]]]
    ev = CaptionEvaluator(b, meteor=False)
    import torch
    gt = torch.tensor([[[0, 0, 10, 10, 1, 1, 0], [20, 20, 30, 30, 1, 2, 1], [40, 40, 50, 50, 2, 4, 2]]]).float()
    grounding = [{"word": "ring", "box": [0, 0, 10, 11], "class": "circle", "plural": 0},     # right
                 {"word": "discs", "box": [20, 20, 30, 30], "class": "circle", "plural": 1},  # right box, wrong plural
                 {"word": "nut", "box": [0, 0, 10, 10], "class": "hexagon", "plural": 0}]     # wrong box
    cap = Caption("a ring discs nut", "a [ring] [discs] [nut]", grounding, 0.0)
    ev.process({"image_ids": [7], "rows": [0], "gt": gt, "gt_mask": torch.ones(1, 3, dtype=torch.bool)}, [cap])
    g = ev.grounding
    assert g["words"] == 3 and g["correct"] == 2 and g["fine_words"] == 2 and g["fine_correct"] == 2
    assert g["plural_words"] == 2 and g["plural_correct"] == 1


def test_count_report_reads_group_sizes_and_number_words():
    from nbt.tools.count_report import report
    instances = {"categories": [{"id": 1, "name": "circle"}], "annotations": [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "attributes": {"colour": "red"}},
        {"image_id": 1, "category_id": 1, "bbox": [20, 0, 10, 10], "attributes": {"colour": "red"}},
        {"image_id": 1, "category_id": 1, "bbox": [40, 0, 10, 10], "attributes": {"colour": "blue"}}]}
    results = {"imgToEval": [{"image_id": 1, "caption": "two red rings and a blue ring", "grounding": [
        {"class": "circle", "box": [0, 0, 10, 10], "plural": 1, "position": 2},
        {"class": "circle", "box": [41, 0, 50, 10], "plural": 1, "position": 6}]}]}
    r = report(results, instances)
    assert r["grounded_words"] == 2
    assert r["plural_accuracy"] == 0.5                    # the blue ring is alone: singular was right
    assert r["number_matches_group"] == 1.0               # "two" for the pair, "a" for the single one
    assert r["by_group_size"] == {2: {"2": 1}, 1: {"1": 1}}


def test_noc_f1_per_class_and_mean_from_tp_fp_fn():
    """The class-file F1 of held-out classes that are not DCC objects (an image is positive when a
    reference mentions the class, predicted positive when the caption does; F1 = 2 tp / (2 tp + fp
    + fn)) for two held-out classes at once."""
    from nbt.misc.evaluation import noc_scores
    refs = {1: ["a red nut"], 2: ["two blue cells here"], 3: ["a nut and a ring"], 4: ["a disc"],
            5: ["a grey picture"], 6: ["two rings"]}
    preds = {1: "a nut", 2: "two cells", 3: "a ring", 4: "a hexagon", 5: "a grey picture", 6: "a disc and a nut"}
    out = noc_scores(preds, refs, [1, 2], _bundle(), meteor=False)
    hexagon, circle = out["per_class"]["hexagon"], out["per_class"]["circle"]
    # hexagon: tp 1, 2; fn 3; fp 4, 6 -> P 2/4, R 2/3, F1 4/7.  circle: tp 3, 6; fn 4; fp none -> P 1, R 2/3, F1 0.8
    assert (hexagon["precision"], hexagon["recall"], hexagon["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert (circle["precision"], circle["recall"], circle["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    assert out["average"]["f1"] == pytest.approx((4 / 7 + 0.8) / 2)


def test_grounding_report_rates_and_their_ground_truth():
    """Two images: one whose boxes carry annotated groups, one without (plural by category count)."""
    import torch
    from nbt.misc.evaluation import CaptionEvaluator
    from nbt.misc.slot_filling import Caption
    b = _bundle()                                  # fine words: circle ring disc hexagon nut cell
    b.captions = [[["a", "ring"]], [["a", "ring"]]]
    ev = CaptionEvaluator(b, meteor=False)

    def image(i, gt, grounding):
        gt = torch.tensor([gt]).float()
        ev.process({"image_ids": [i], "rows": [i], "gt": gt, "gt_mask": torch.ones(1, gt.shape[1], dtype=torch.bool)},
                   [Caption("", "", grounding, 0.0)])

    def g(word, box, cls, plural):
        return {"word": word, "box": box, "class": cls, "plural": plural}
    boxes = [[0, 0, 10, 10, 1, 1, 0], [20, 20, 30, 30, 1, 2, 1], [40, 40, 50, 50, 2, 4, 2], [60, 60, 70, 70, 1, 1, 0]]
    image(0, boxes, [
        g("rings", [0, 0, 10, 11], "circle", 1),      # grounded, right kind, right plural (its group has two)
        g("circle", [20, 20, 30, 30], "circle", 0),   # grounded, the category's name for a disc, right plural
        g("ring", [20, 20, 30, 30], "circle", 0),     # grounded, wrong kind (a disc), right plural (alone)
        g("nut", [0, 0, 10, 10], "hexagon", 0),       # not grounded: no hexagon there
        g("nuts", [40, 40, 50, 50], "hexagon", 1)])   # grounded, right kind, wrong plural (alone)
    image(1, [[0, 0, 10, 10, 1, 1, -1], [20, 20, 30, 30, 1, 2, -1]], [
        g("ring", [0, 0, 10, 10], "circle", 1)])      # no groups: two circles in the image, plural right
    r = ev.grounding_report()
    assert r["visual_words"] == 6 and r["grounding_accuracy"] == pytest.approx(5 / 6)
    assert r["fine_grained_accuracy"] == pytest.approx(3 / 4) and r["category_name_share"] == pytest.approx(1 / 5)
    assert r["plural_accuracy"] == pytest.approx(4 / 5)
    assert r["plural_accuracy_by_annotated_groups"] == pytest.approx(3 / 4)
    assert r["plural_accuracy_by_category_count"] == 1.0
    assert r["plural_ground_truth"] == "annotated groups and category count"
    assert r["fine_grained_ground_truth"] == "annotated kinds"
