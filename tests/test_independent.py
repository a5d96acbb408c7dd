"""The whole path on a grounded dataset the project did not write (tests/independent_data.py):
COCO captions / instances with non-contiguous category ids and no `attributes`, a class-name file
with two-word names and irregular plurals, a DCC-style NOC split file without a held-out list, a
robust split file and a Karpathy file in the original formats, and a detector whose scores are low.

One small run (80 images, one epoch, a tiny model) goes through the project's commands exactly as
a user types them (prepro -> detections -> train + evaluate -> CBS novel); the tests then check
format-level facts of what it wrote. The full-budget run with scores is
benchmarks/independent_e2e.py.

"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import h5py
import numpy as np
import pytest

from conftest import ROOT
from independent_data import (BY_NAME, CLASS_FILE_ORDER, HELD_OUT, noc_f1, pipeline, plural_table, prepro_paths,
                              tokens_of, write_config, write_dataset)

RUN = "indep_ci"
TINY = ["--att_feat_size", "32", "--fc_feat_size", "32", "--rnn_size", "48", "--input_encoding_size", "24",
        "--att_hid_size", "24", "--class_emb_size", "16", "--loc_emb_size", "16", "--image_size", "72",
        "--image_crop_size", "64", "--max_epochs", "1", "--val_every_epoch", "0", "--num_workers", "0",
        "--cuda", "False"]


@pytest.fixture(scope="module")
def indep(tmp_path_factory):
    """Data, config and the four commands' outcomes: {step: CompletedProcess}."""
    data = tmp_path_factory.mktemp("indep")
    write_dataset(data, n_images=80, seed=5)
    write_config(data, ROOT / "cfgs" / "noc_world.yml", run_id=RUN)
    done = {}
    for step, cmd in pipeline(data, ROOT, sys.executable, RUN, TINY):
        done[step] = subprocess.run(cmd, cwd=data, capture_output=True, text=True, timeout=600)
        if done[step].returncode != 0:
            break
    return data, done


def _read(path):
    return json.loads(path.read_text())


def _result(data, run_id):
    """The one results file of a run: eval_results/<id>_test_<decoding>.json."""
    [path] = sorted((data / "eval_results").glob(f"{run_id}_test_*.json"))
    return _read(path)


def _ok(indep, *steps):
    data, done = indep
    for s in steps:
        if s not in done or done[s].returncode != 0:
            pytest.fail(f"step '{s}' did not run through (see test_the_whole_path_runs_...)")
    return data


def test_the_whole_path_runs_and_writes_its_files(indep):
    data, done = indep
    for step, r in done.items():
        assert r.returncode == 0, f"{step}: exit {r.returncode}\n{' '.join(r.args)}\n{r.stderr[-3000:]}"
    assert list(done) == ["prepro", "detections", "train", "cbs"]
    p = prepro_paths(data)
    for f in (p["dic"], p["cap"], p["df"], p["h5"], data / "save" / RUN / "model.pth",
              data / "save" / RUN / "config.yml"):
        assert f.is_file(), f
    split = _read(data / "split_noc_indep.json")
    n_test = len(split["test"]) + len(split["test_train"])
    for name in (RUN, f"{RUN}_cbs"):
        res = _result(data, name)
        assert len(res["imgToEval"]) == n_test
        assert all(isinstance(x["caption"], str) for x in res["imgToEval"])
        assert res["overall"]["CIDEr"] == pytest.approx(cider_by_hand(data, res), abs=1e-6)
    assert _result(data, f"{RUN}_cbs")["config"]["cbs"] is True
    assert "CIDEr" in done["cbs"].stdout


def test_split_without_held_out_list_holds_out_the_two_unmentioned_classes(indep):
    data = _ok(indep, "prepro")
    p = prepro_paths(data)
    dic, caps = _read(p["dic"]), _read(p["cap"])
    train_words = {t for im, cs in zip(dic["images"], caps) if im["split"] == "train" for c in cs for t in c}
    for name in HELD_OUT:                              # the generator's promise, checked
        assert not {w for k in BY_NAME[name].kinds for w in (k.word, k.plural)} & train_words
    assert sorted(dic["held_out"]) == sorted(HELD_OUT)


def cider_by_hand(data, res) -> float:
    """pycocoevalcap's CIDEr-D of a results file against the generator's own captions (truth.json,
    tokenised by independent_data.tokens_of), not the project's references or metrics code."""
    from pycocoevalcap.cider.cider import Cider
    truth = {im["id"]: im for im in _read(data / "truth.json")["images"]}
    preds = {p["image_id"]: p["caption"] for p in res["imgToEval"]}
    refs = {i: [" ".join(tokens_of(c)) for c in truth[i]["captions"]] for i in preds}
    return Cider().compute_score(refs, {i: [" ".join(tokens_of(c))] for i, c in preds.items()})[0]


def test_cbs_results_report_noc_f1_of_the_held_out_classes(indep):
    """The project's NOC F1 per held-out class = DCC's, computed by independent_data.noc_f1 from the
    generator's truth (its own mention words and captions)."""
    data = _ok(indep, "cbs")
    res = _result(data, f"{RUN}_cbs")
    assert sorted(res["noc"]["per_class"]) == sorted(HELD_OUT)
    truth = {im["id"]: im for im in _read(data / "truth.json")["images"]}
    preds = {p["image_id"]: p["caption"] for p in res["imgToEval"]}
    for name in HELD_OUT:
        want = noc_f1(preds, truth, name)
        got = res["noc"]["per_class"][name]
        assert (got["f1"], got["precision"], got["recall"]) == pytest.approx(
            (want["f1"], want["precision"], want["recall"])), name
    assert any(noc_f1(preds, truth, n)["f1"] > 0 for n in HELD_OUT)      # CBS novel names the novel objects


def test_category_ids_map_to_class_lines_by_name_not_by_id(indep):
    data = _ok(indep, "detections")
    from nbt.misc.annotations import BoxIndex
    from nbt.misc.vocab import ClassNames
    classes = ClassNames.read(data / "indep_class_name.txt")
    assert list(classes.names) == list(CLASS_FILE_ORDER)
    ids = [BY_NAME[n].id for n in CLASS_FILE_ORDER]
    assert ids != sorted(ids)                          # an id-order mapping would be wrong here
    line = {n: i + 1 for i, n in enumerate(CLASS_FILE_ORDER)}
    dic = _read(prepro_paths(data)["dic"])
    dets = {e["image_id"]: e["detections"] for e in _read(data / "detections_indep.json")}
    with h5py.File(prepro_paths(data)["h5"]) as f:
        labels, num = f["dets_labels"][:], f["dets_num"][:]
    assert labels.shape[0] == len(dic["images"])
    for row, im in enumerate(dic["images"]):
        want = [(line[d["category_name"]], d["score"]) for d in dets[im["id"]]
                if d["category_name"] in line]                          # "plate" has no class line
        got = labels[row, :num[row], 4:6]                               # sorted by score, as the JSON
        assert [int(c) for c in got[:, 0]] == [c for c, _ in want], f"row {row} (image {im['id']})"
        assert np.allclose(got[:, 1], [s for _, s in want], atol=1e-5)
    with pytest.warns(UserWarning, match="'plate'"):          # a COCO category without a class line
        boxes = BoxIndex.from_files([str(data / "annotations" / f"instances_{s}.json") for s in ("train", "val")],
                                    classes)
    for im in _read(data / "truth.json")["images"]:
        want = Counter(line[o["category"]] for o in im["objects"] if o["category"] in line)
        assert Counter(boxes.get(im["id"])[1].tolist()) == want, im["id"]


def _plural_marks(data):
    """(surface, class-file word) of every token the project's matcher marks plural in the
    training captions, and every true plural there that it does not mark."""
    from nbt.misc.vocab import ClassNames, VisualWordMatcher
    dic, caps = _read(prepro_paths(data)["dic"]), _read(prepro_paths(data)["cap"])
    classes = ClassNames.read(data / "indep_class_name.txt")
    matcher = VisualWordMatcher(classes)
    truth = plural_table()
    marked, missed = Counter(), Counter()
    for im, cs in zip(dic["images"], caps):
        if im["split"] != "train":
            continue
        for tokens in cs:
            found, claimed = {}, set()
            for v in matcher.match(tokens):
                found[v.pos] = v
                claimed.update(range(v.pos + 1, v.pos + v.length))      # second word of a bigram
                if v.plural:
                    marked[(v.surface, classes.fine_words[v.fine])] += 1
            for i, t in enumerate(tokens):
                if i in claimed:
                    continue
                two = " ".join(tokens[i:i + 2])
                for surface in (two, t):
                    word = next((w for w, pl in truth.items() if pl == surface and pl != w), None)
                    if word and not (i in found and found[i].surface == surface and found[i].plural):
                        missed[(surface, word)] += 1
                        break
    return dic, marked, missed


def test_mice_and_knives_are_the_plurals_of_mouse_and_knife(indep):
    data = _ok(indep, "prepro")
    dic, marked, _ = _plural_marks(data)
    assert marked[("mice", "mouse")] > 0 and marked[("knives", "knife")] > 0
    assert dic["plural_of"]["mouse"] == "mice" and dic["plural_of"]["knife"] == "knives"


def test_only_real_plurals_are_plural_visual_words(indep):
    """Every plural the matcher marks is the plural of its class-file word, every real plural of
    the training captions is marked, and the dic's plural table is English."""
    data = _ok(indep, "prepro")
    dic, marked, missed = _plural_marks(data)
    truth = plural_table()
    false = sorted(f"{s}->{w}" for (s, w) in marked if truth.get(w) != s)
    unmarked = sorted(f"{s}->{w}" for (s, w) in missed)
    wrong_table = sorted(f"{w}->{dic['plural_of'].get(w)}" for w in truth if w in dic["plural_of"]
                         and dic["plural_of"][w] != truth[w])
    problems = false + unmarked + wrong_table
    assert not problems, problems


def test_grounding_boxes_are_in_the_images_pixels(indep):
    """A grounded word points at a proposal: its box must be that proposal's box in the image's
    own pixels (the images here are 96-160 px, never the 64 px crop)."""
    data = _ok(indep, "cbs")
    dets = {e["image_id"]: e for e in _read(data / "detections_indep.json")}
    crop = 64
    in_image = in_crop = total = 0
    for p in [p for run in (RUN, f"{RUN}_cbs") for p in _result(data, run)["imgToEval"]]:   # greedy, and CBS
        e = dets[p["image_id"]]
        boxes = np.array([d["bbox_xyxy"] for d in e["detections"]], np.float64).reshape(-1, 4)
        scale = np.array([crop / e["width"], crop / e["height"]] * 2)
        for g in p["grounding"]:
            total += 1
            in_image += bool(len(boxes) and np.abs(boxes - g["box"]).max(1).min() < 0.02)
            in_crop += bool(len(boxes) and np.abs(boxes * scale - g["box"]).max(1).min() < 0.02)
    assert total > 0
    assert in_image == total and in_crop == 0


def test_karpathy_file_and_robust_split_file_are_read(indep, tmp_path):
    """The same images through the other two input formats of the original."""
    data = _ok(indep, "prepro")
    from nbt.prepro import prepro_dic_coco
    cls = str(data / "indep_class_name.txt")
    assert prepro_dic_coco.main(["--input_json", str(data / "dataset_indep.json"), "--class_name_file", cls,
                                 "--output_dic", str(tmp_path / "k_dic.json"),
                                 "--output_cap", str(tmp_path / "k_cap.json")]) == 0
    karpathy = _read(data / "dataset_indep.json")["images"]
    dic = _read(tmp_path / "k_dic.json")
    want = {im["cocoid"]: "train" if im["split"] == "restval" else im["split"] for im in karpathy}
    assert {im["id"]: im["split"] for im in dic["images"]} == want
    assert _read(tmp_path / "k_cap.json")[0] == [s["tokens"] for s in karpathy[0]["sentences"]]
    assert prepro_dic_coco.main(["--input_json", str(data / "dataset_indep.json"), "--class_name_file", cls,
                                 "--split", "robust", "--split_file", str(data / "split_robust_indep.json"),
                                 "--output_dic", str(tmp_path / "r_dic.json"),
                                 "--output_cap", str(tmp_path / "r_cap.json")]) == 0
    robust = _read(data / "split_robust_indep.json")
    got = Counter(im["split"] for im in _read(tmp_path / "r_dic.json")["images"])
    assert got == {"train": len(robust["train_id"]), "val": len(robust["val_id"]), "test": len(robust["test_id"])}
