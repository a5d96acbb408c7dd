"""Caption metrics against published values, NOC F1 and the grounding report."""
import json
from types import SimpleNamespace

import pytest

from conftest import SHARED
from nbt.misc.metrics import java_available, score_captions

METRICS = SHARED / "caption-metrics"


@pytest.mark.skipif(not METRICS.is_dir(), reason="../shared/data/caption-metrics not present")
def test_metrics_match_published_nlg_eval_values():
    hyp = (METRICS / "hyp.txt").read_text().strip().splitlines()
    r1 = (METRICS / "ref1.txt").read_text().strip().splitlines()
    r2 = (METRICS / "ref2.txt").read_text().strip().splitlines()
    refs = {i: [r1[i].strip(), r2[i].strip()] for i in range(len(hyp))}
    hyps = {i: hyp[i].strip() for i in range(len(hyp))}
    overall, per_image = score_captions(refs, hyps, meteor=java_available(), pretokenized=True)
    expected = json.loads((METRICS / "expected_scores.json").read_text())
    for k, v in expected.items():
        if k == "METEOR" and not java_available():
            continue
        assert round(v - overall[k], 5) == 0, (k, overall[k], v)
    assert set(per_image) == {0, 1} and "CIDEr" in per_image[0]


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


def test_noc_f1_by_the_dcc_definition():
    from nbt.misc.evaluation import noc_scores
    refs = {1: ["a red nut"], 2: ["two blue cells here"], 3: ["a ring"], 4: ["a disc"]}
    preds = {1: "a nut", 2: "a ring", 3: "two hexagons", 4: "a disc"}
    out = noc_scores(preds, refs, [2], _bundle(), meteor=False)
    e = out["per_class"]["hexagon"]
    # positives: images 1, 2; predicted: 1, 3 -> tp 1, fp 1, fn 1
    assert e["precision"] == 0.5 and e["recall"] == 0.5 and e["f1"] == 0.5 and e["novel_images"] == 2
    assert out["average"]["f1"] == 0.5


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
