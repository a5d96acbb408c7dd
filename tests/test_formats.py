"""Files the project did not write: the original's NOC split file, detection h5 files without image
ids or in another order, invalid detection rows; and what prepro writes (vocabulary threshold,
CIDEr-D document frequencies) and the grounding report reads."""
import json
import warnings
from collections import Counter
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from conftest import COCO_MINI, ROOT, needs_coco_mini, world_options
from nbt.misc.dataset import CaptionDataset, DataBundle, collate
from nbt.misc.detector import detections_from_json, valid_rows, write_h5
from nbt.misc.io import DataError
from nbt.misc.vocab import ClassNames, Vocabulary, build_vocab
from nbt.prepro import prepro_det, prepro_dic_coco
from nbt.misc.cider import document_frequency, document_frequency_plain

CLASSES = ROOT / "data" / "coco" / "coco_class_name.txt"
ANN = COCO_MINI / "annotations"


def _mini_args(tmp_path, *extra):
    return ["--captions_json", str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json"),
            "--class_name_file", str(CLASSES), "--output_dic", str(tmp_path / "dic.json"),
            "--output_cap", str(tmp_path / "cap.json"), "--quiet", *extra]


# -- vocabulary threshold -------------------------------------------------------------------------
def test_threshold_keeps_words_seen_more_than_it_and_zero_keeps_all():
    caps = [["a", "dog"], ["a", "cat"], ["a", "dog"], ["the", "dog", "runs"]]
    assert set(build_vocab(caps, 0).values()) == {"a", "dog", "cat", "the", "runs", "UNK"}
    assert set(build_vocab(caps, 1).values()) == {"a", "dog", "UNK"}
    assert set(build_vocab(caps, 2).values()) == {"a", "dog", "UNK"}
    assert set(build_vocab(caps, 3).values()) == {"UNK"}


@needs_coco_mini
def test_unk_rate_on_coco_mini_training_tokens(tmp_path):
    images = prepro_dic_coco.images_from_coco_captions(
        [str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json")], quiet=True)
    train = [c for im in images if im["split"] == "train" for c in im["captions"]]
    counts = Counter(t for c in train for t in c)
    n = sum(counts.values())
    rates = {}
    for threshold in (0, 1, 5):
        vocab = set(build_vocab(train, threshold).values())
        rates[threshold] = sum(t not in vocab for c in train for t in c) / n
    print("\ncoco-mini training tokens as UNK: " + ", ".join(f"threshold {k}: {100 * v:.1f} %" for k, v in rates.items()))
    assert rates[0] == 0
    assert rates[1] == sum(k for k in counts.values() if k == 1) / n        # exactly the words seen once
    assert rates[0] < rates[1] < rates[5]


# -- CIDEr-D document frequencies -----------------------------------------------------------------
def _check_df(per_image):
    """Both df functions against pycocoevalcap's CiderScorer.compute_doc_freq (the reference
    implementation: a corpus of these images' references)."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer
    refs = [[" ".join(c) for c in caps] for caps in per_image]
    reference = CiderScorer(n=4, sigma=6.0)
    for r in refs:
        reference += (None, r)
    reference.compute_doc_freq()
    theirs = {"ref_len": float(np.log(float(len(reference.crefs)))),
              "df": {" ".join(gram): n for gram, n in reference.document_frequency.items()}}
    ours = document_frequency(refs)
    assert ours["ref_len"] == pytest.approx(theirs["ref_len"]) and ours["df"] == theirs["df"]
    assert document_frequency_plain(refs) == ours


@needs_coco_mini
def test_df_table_equals_misc_cider_on_coco_mini(tmp_path):
    assert prepro_dic_coco.main(_mini_args(tmp_path, "--output_df", str(tmp_path / "df.json"))) == 0
    dic = json.loads((tmp_path / "dic.json").read_text())
    cap = json.loads((tmp_path / "cap.json").read_text())
    train = [caps for im, caps in zip(dic["images"], cap) if im["split"] == "train"]
    written = json.loads((tmp_path / "df.json").read_text())
    assert written == document_frequency_plain([[" ".join(c) for c in caps] for caps in train])
    assert len(written["df"]) > 5000
    _check_df(train)                                        # the table prepro wrote, against pycocoevalcap
    _check_df([caps for caps in cap])                       # all 159 images, val and test too


def test_df_table_equals_misc_cider_on_the_world(world_dir):
    cap = json.loads((world_dir / "cap_world.json").read_text())
    _check_df(cap)
    _check_df([[["a", "", "b"], ["a  b"]], [], [["c"]]])   # empty tokens and images, as a file may have


# -- NOC split files --------------------------------------------------------------------------------
@needs_coco_mini
def test_dcc_style_split_without_held_out_list_gives_its_classes(tmp_path):
    split = tmp_path / "split_noc.json"
    assert prepro_dic_coco.main(_mini_args(tmp_path, "--split", "noc", "--split_file", str(split),
                                           "--held_out", "dog,pizza")) == 0
    dcc = json.loads(split.read_text())
    assert dcc.pop("held_out") == ["dog", "pizza"]
    (tmp_path / "dcc.json").write_text(json.dumps(dcc))    # the original's format: five dicts only
    assert set(dcc) == {"train", "val", "val_train", "test", "test_train"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no training caption mentions them
        assert prepro_dic_coco.main(_mini_args(tmp_path, "--split", "noc",
                                               "--split_file", str(tmp_path / "dcc.json"))) == 0
    dic = json.loads((tmp_path / "dic.json").read_text())
    assert dic["held_out"] == ["dog", "pizza"]
    assert prepro_dic_coco.main(_mini_args(tmp_path, "--split", "noc", "--split_file", str(tmp_path / "dcc.json"),
                                           "--held_out", "pizza")) == 0        # --held_out wins
    assert json.loads((tmp_path / "dic.json").read_text())["held_out"] == ["pizza"]


@needs_coco_mini
def test_noc_split_without_held_out_classes_is_an_error(tmp_path, capsys):
    images = prepro_dic_coco.images_from_coco_captions(
        [str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json")], quiet=True)
    ids = [str(im["id"]) for im in images]
    (tmp_path / "none.json").write_text(json.dumps({"train": {i: 1 for i in ids[:100]}, "val": {},
                                                   "val_train": {i: 1 for i in ids[100:130]}, "test": {},
                                                   "test_train": {i: 1 for i in ids[130:]}}))
    assert prepro_dic_coco.main(_mini_args(tmp_path, "--split", "noc", "--split_file",
                                           str(tmp_path / "none.json"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no held-out classes" in err[0] and not (tmp_path / "dic.json").exists()


# -- detection h5 ---------------------------------------------------------------------------------------
def _world_rows(world_dir):
    with h5py.File(world_dir / "world_detection.h5") as f:
        return [f["dets_labels"][i, :n] for i, n in enumerate(f["nms_num"][:])]


def _world_ids(world_dir):
    return [im["id"] for im in json.loads((world_dir / "dic_world.json").read_text())["images"]]


def test_h5_in_another_order_is_refused_then_reordered(world_dir, tmp_path):
    rows, ids = _world_rows(world_dir), _world_ids(world_dir)
    perm = np.random.default_rng(0).permutation(len(ids))
    write_h5(tmp_path / "shuffled.h5", [rows[k] for k in perm], image_ids=[ids[k] for k in perm])
    with pytest.raises(DataError, match="re-order"):
        DataBundle.load(world_options(world_dir, proposal_h5=str(tmp_path / "shuffled.h5")))
    assert prepro_det.main(["--input_dic", str(world_dir / "dic_world.json"), "--reorder", str(tmp_path / "shuffled.h5"),
                            "--class_name_file", str(world_dir / "world_class_name.txt"),
                            "--output_h5", str(tmp_path / "fixed.h5")]) == 0
    with h5py.File(tmp_path / "fixed.h5") as f:
        assert list(f["image_id"][:]) == ids
        assert all(np.array_equal(f["dets_labels"][i, :n], rows[i]) for i, n in enumerate(f["nms_num"][:]))
    DataBundle.load(world_options(world_dir, proposal_h5=str(tmp_path / "fixed.h5")))


def test_h5_without_ids_is_checked_by_row_count(world_dir, tmp_path, capsys):
    rows, ids = _world_rows(world_dir), _world_ids(world_dir)
    DataBundle.load(world_options(world_dir))                # the world's h5: no ids, one row per image
    write_h5(tmp_path / "short.h5", rows[:-1])
    with pytest.raises(DataError, match=f"159 rows for the dic's {len(ids)} images") as err:
        DataBundle.load(world_options(world_dir, proposal_h5=str(tmp_path / "short.h5")))
    assert "\n" not in str(err.value)
    # an h5 of the original's (no ids) written for another dic order: --reorder_dic names that order
    perm = np.random.default_rng(1).permutation(len(ids))
    write_h5(tmp_path / "theirs.h5", [rows[k] for k in perm])
    dic = json.loads((world_dir / "dic_world.json").read_text())
    (tmp_path / "their_dic.json").write_text(json.dumps({**dic, "images": [dic["images"][k] for k in perm]}))
    base = ["--input_dic", str(world_dir / "dic_world.json"), "--class_name_file", str(world_dir / "world_class_name.txt"),
            "--output_h5", str(tmp_path / "ours.h5"), "--reorder", str(tmp_path / "theirs.h5")]
    assert prepro_det.main(base) == 2 and "--reorder_dic" in capsys.readouterr().err
    assert prepro_det.main(base + ["--reorder_dic", str(tmp_path / "their_dic.json")]) == 0
    with h5py.File(tmp_path / "ours.h5") as f:
        assert list(f["image_id"][:]) == ids and np.array_equal(f["dets_labels"][5, :len(rows[5])], rows[5])


def test_invalid_rows_are_dropped_counted_and_never_reach_the_model(world_dir, tmp_path):
    rows, ids = _world_rows(world_dir), _world_ids(world_dir)
    bad = np.array([[np.nan, 1, 5, 5, 1, 0.9], [10, 10, 5, 20, 1, 0.9], [1, 1, 5, 5, 0, 0.9],
                    [1, 1, 5, 5, 99, 0.9], [1, 1, 5, np.inf, 1, 0.9]], np.float32)
    broken = [np.concatenate([bad, r]) if i < 3 else r for i, r in enumerate(rows)]
    write_h5(tmp_path / "bad.h5", broken, image_ids=ids)
    with pytest.warns(UserWarning, match="15 invalid proposal rows in 3 images"):
        b = DataBundle.load(world_options(world_dir, proposal_h5=str(tmp_path / "bad.h5")))
    ds = CaptionDataset(b, "train", train=False)
    batch = collate([ds[(i, 0)] for i in range(4)])
    props = batch["proposals"][batch["prop_mask"]]
    assert torch.isfinite(props).all() and (props[:, 4] >= 1).all() and (props[:, 4] <= 8).all()
    assert ds._h5.dropped == 5 * sum(r < 3 for r in ds.rows[:4])


def test_valid_rows_clips_to_the_image_and_keeps_six_columns():
    rows = np.array([[-5, 2, 50, 90, 2, 0.5], [3, 3, 3, 3, 1, 0.1], [1, 1, 2, 2, 1.5, 0.3]], np.float32)
    out, dropped = valid_rows(rows, num_classes=3, size=(40, 60))
    assert dropped == 1 and out.shape == (2, 6)
    np.testing.assert_allclose(out[0], [0, 2, 40, 60, 2, 0.5])


def test_detection_json_rows_are_validated():
    classes = ClassNames(("person", "dog"), (("person",), ("dog",)))
    entries = [{"image_id": 1, "width": 100, "height": 50, "detections": [
        {"bbox_xyxy": [1, 2, 30, 40], "category_name": "dog", "score": 0.9},
        {"bbox_xyxy": [float("nan"), 2, 30, 40], "category_name": "dog", "score": 0.8},
        {"bbox_xyxy": [1, 2, 30], "category_name": "person", "score": 0.7},
        {"bbox_xyxy": [50, 2, 30, 40], "category_name": "person", "score": 0.6},
        {"bbox_xyxy": [1, 2, 300, 40], "category_name": "person", "score": 0.5},
        {"bbox_xyxy": [1, 2, 30, 40], "category_name": "zebra", "score": 0.5}]}]
    with pytest.warns(UserWarning) as caught:
        table = detections_from_json(entries, classes, "d.json")
    text = " | ".join(str(w.message) for w in caught)
    assert "dropped 3 unusable detection rows" in text and "dropped 1 of 6 detections of classes" in text
    np.testing.assert_allclose(table[1], [[1, 2, 30, 40, 2, 0.9], [1, 2, 100, 40, 1, 0.5]])


@needs_coco_mini
def test_prepro_det_writes_the_dics_image_ids(tmp_path):
    assert prepro_dic_coco.main(_mini_args(tmp_path)) == 0
    assert prepro_det.main(["--input_dic", str(tmp_path / "dic.json"), "--class_name_file", str(CLASSES),
                            "--output_h5", str(tmp_path / "det.h5"),
                            "--from_json", str(COCO_MINI / "detections_fastestdet.json")]) == 0
    dic = json.loads((tmp_path / "dic.json").read_text())
    with h5py.File(tmp_path / "det.h5") as f:
        assert list(f["image_id"][:]) == [im["id"] for im in dic["images"]]


# -- grounding report ---------------------------------------------------------------------------------
def _evaluate(classes, gt, grounding):
    from nbt.misc.evaluation import CaptionEvaluator
    from nbt.misc.slot_filling import Caption
    b = SimpleNamespace(classes=classes, vocab=Vocabulary({"1": "a", "2": "UNK"}, classes), captions=[[["a"]]])
    ev = CaptionEvaluator(b, meteor=False)
    cap = Caption("a", "a", grounding, 0.0)
    ev.process({"image_ids": [1], "rows": [0], "gt": torch.tensor([gt]).float(),
                "gt_mask": torch.ones(1, len(gt), dtype=torch.bool)}, [cap])
    return ev.grounding_report()


def test_class_name_that_is_its_own_fine_grained_word_is_scored():
    """ "dog" is the class name and one of its kinds: saying it for a dog of kind "dog" is a right
    fine-grained word, not an unscored category word; "puppies" for it is a wrong one."""
    classes = ClassNames(("dog", "cat"), (("dog", "puppy"), ("cat", "kitten")))
    gt = [[0, 0, 10, 10, 1, 0, -1], [20, 20, 30, 30, 1, 1, -1], [40, 40, 50, 50, 2, 3, -1]]
    r = _evaluate(classes, gt, [
        {"word": "dog", "box": [0, 0, 10, 10], "class": "dog", "plural": 0},        # right kind
        {"word": "puppies", "box": [0, 0, 10, 10], "class": "dog", "plural": 1},    # wrong kind
        {"word": "cat", "box": [40, 40, 50, 50], "class": "cat", "plural": 0}])     # generic for a kitten
    assert r["fine_grained_accuracy"] == 0.5 and r["category_name_share"] == pytest.approx(1 / 3)
    assert r["fine_grained_ground_truth"] == "annotated kinds"
    # no group annotations: plural by the number of dogs in the image (2: plural is right)
    assert r["plural_ground_truth"] == "category count" and r["plural_accuracy_by_category_count"] == pytest.approx(2 / 3)
    assert r["plural_accuracy_by_annotated_groups"] is None


def test_plural_report_names_annotated_groups_when_the_instances_have_them():
    classes = ClassNames(("dog",), (("dog", "puppy"),))
    gt = [[0, 0, 10, 10, 1, -1, 0], [20, 20, 30, 30, 1, -1, 1]]                  # two dogs, two groups
    r = _evaluate(classes, gt, [{"word": "dogs", "box": [0, 0, 10, 10], "class": "dog", "plural": 1}])
    assert r["plural_ground_truth"] == "annotated groups" and r["plural_accuracy_by_annotated_groups"] == 0
    assert r["fine_grained_accuracy"] is None and r["fine_grained_ground_truth"].startswith("none")
