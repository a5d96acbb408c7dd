"""The built-in world: real formats, read back with pycocotools / h5py, and its grounding properties."""
import json

import h5py
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from nbt.misc.vocab import ClassNames, VisualWordMatcher
from nbt.prepro.world import CATEGORIES, WorldConfig, generate
from nbt.prepro.world_grammar import plural


def generator_mentions(tokens: list[str]) -> set[str]:
    """The categories a caption names, by the generator's own word lists (category, its two kinds,
    their plurals): the truth the project's matcher is checked against."""
    words = {w: cat for cat, kinds in CATEGORIES.items() for k in (cat, *kinds) for w in (k, plural(k))}
    return {words[t] for t in tokens if t in words}


def test_files_read_back_in_real_formats(world_dir):
    inst = COCO(str(world_dir / "annotations" / "instances_world.json"))
    caps = COCO(str(world_dir / "annotations" / "captions_world.json"))
    assert len(inst.getImgIds()) == 160 and len(caps.getImgIds()) == 160
    assert len(inst.getCatIds()) == 8
    for img_id in caps.getImgIds():
        assert len(caps.getAnnIds(imgIds=img_id)) >= 5
    karpathy = json.loads((world_dir / "dataset_world.json").read_text())
    assert {im["split"] for im in karpathy["images"]} == {"train", "val", "test"}
    im = karpathy["images"][0]
    assert (world_dir / "images" / im["filepath"] / im["filename"]).is_file()
    assert all("tokens" in s and "raw" in s for s in im["sentences"])
    with h5py.File(world_dir / "world_detection.h5") as f:
        assert f["dets_labels"].shape == (160, 100, 6)
        assert f["dets_num"].shape == (160,) and f["nms_num"].shape == (160,)
        labels = f["dets_labels"][:]
        num = f["nms_num"][:]
    cls = np.concatenate([labels[i, :num[i], 4] for i in range(160)])
    assert cls.min() >= 1 and cls.max() <= 8                      # class index 1..C, not category id
    scores = labels[0, :num[0], 5]
    assert np.all(np.diff(scores) <= 0)                           # sorted by score


def test_class_file_has_category_then_fine_words(world_dir):
    classes = ClassNames.read(world_dir / "world_class_name.txt")
    assert classes.num_classes == 8
    assert all(len(w) >= 3 for w in classes.words)                # category + >= 2 kinds


def test_plurals_attributes_and_grounded_fine_words(world_dir):
    karpathy = json.loads((world_dir / "dataset_world.json").read_text())
    sents = [s["tokens"] for im in karpathy["images"] for s in im["sentences"]]
    classes = ClassNames.read(world_dir / "world_class_name.txt")
    matcher = VisualWordMatcher(classes)
    visual = [v for toks in sents for v in matcher.match(toks)]
    assert sum(v.plural for v in visual) > 20                      # "two red rings"
    text = " ".join(" ".join(t) for t in sents)
    for word in ("red", "left of", "above", "two"):
        assert word in text
    kinds = {classes.fine_words[v.fine] for v in visual}
    assert len(kinds) >= 16                                        # fine-grained words used
    inst = json.loads((world_dir / "annotations" / "instances_world.json").read_text())
    assert all(a["attributes"]["kind"] in classes.fine_words for a in inst["annotations"])


def test_noc_held_out_absent_from_training_but_detected(world_dir):
    noc = json.loads((world_dir / "split_noc_world.json").read_text())
    dic = json.loads((world_dir / "noc" / "dic_world.json").read_text())
    caps = json.loads((world_dir / "noc" / "cap_world.json").read_text())
    classes = ClassNames.read(world_dir / "world_class_name.txt")
    held = [classes.names.index(n) + 1 for n in noc["held_out"]]
    assert sorted(noc["held_out"]) == ["heart", "hexagon"]                    # WorldConfig's default
    matcher = VisualWordMatcher(classes)
    train_rows = [i for i, im in enumerate(dic["images"]) if im["split"] == "train"]
    for i in train_rows:
        assert not any(generator_mentions(c) & set(noc["held_out"]) for c in caps[i])
        assert not matcher.mentioned_classes(caps[i]) & set(held)
    assert not {w for n in noc["held_out"] for w in classes.words[classes.names.index(n)]} & \
        set(dic["ix_to_word"].values())
    # every image whose captions name a held-out category is out of training (the split file's own sets)
    karpathy = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    novel = {im["cocoid"] for im in karpathy
             if any(generator_mentions(s["tokens"]) & set(noc["held_out"]) for s in im["sentences"])}
    assert novel and not novel & {int(k) for k in noc["train"]}
    assert novel <= {int(k) for part in ("val", "test") for k in noc[part]}
    with h5py.File(world_dir / "world_detection.h5") as f:
        labels, num = f["dets_labels"][:], f["nms_num"][:]
    train_dets = np.concatenate([labels[i, :num[i], 4] for i in train_rows])
    test_rows = [i for i, im in enumerate(dic["images"]) if im["split"] == "test"]
    test_dets = np.concatenate([labels[i, :num[i], 4] for i in test_rows])
    for c in held:
        assert (test_dets == c).any()                              # still detected
    assert len(noc["val"]) > 0 and len(noc["test"]) > 0 and len(train_dets)


def test_robust_pairs_never_seen_together_in_training(world_dir):
    robust = json.loads((world_dir / "split_robust_world.json").read_text())
    pairs = {tuple(p) for p in robust["test_pairs"]}
    assert pairs and robust["test_id"]
    karpathy = json.loads((world_dir / "dataset_world.json").read_text())
    classes = ClassNames.read(world_dir / "world_class_name.txt")
    names = {i + 1: n for i, n in enumerate(classes.names)}
    matcher = VisualWordMatcher(classes)
    truth = {im["cocoid"]: set().union(*(generator_mentions(s["tokens"]) for s in im["sentences"]))
             for im in karpathy["images"]}
    mention = {im["cocoid"]: matcher.mentioned_classes([s["tokens"] for s in im["sentences"]])
               for im in karpathy["images"]}
    assert all({names[c] for c in mention[i]} == truth[i] for i in truth)      # the matcher agrees with the truth
    ids = {k: [e["img_id"] for e in robust[k]] for k in ("train_id", "test_id")}      # the original's entries
    named = [(names[a], names[b]) for a, b in pairs]
    for i in ids["train_id"]:
        for a, b in named:
            assert not {a, b} <= truth[i]
    for i in ids["test_id"]:
        assert any({a, b} <= truth[i] for a, b in named)
    assert not set(ids["train_id"]) & set(ids["test_id"])


def _digest(root):
    return (root / "dataset_world.json").read_bytes(), (root / "world_detection.h5").stat().st_size, \
        sorted((p.name, p.read_bytes()) for p in (root / "images" / "world").iterdir())[:5]


def test_deterministic_for_a_seed_and_different_for_another(tmp_path):
    cfg = dict(n_images=12)
    generate(WorldConfig(out=str(tmp_path / "a"), seed=3, **cfg), quiet=True)
    generate(WorldConfig(out=str(tmp_path / "b"), seed=3, **cfg), quiet=True)
    generate(WorldConfig(out=str(tmp_path / "c"), seed=4, **cfg), quiet=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")[0] != _digest(tmp_path / "c")[0]
    with h5py.File(tmp_path / "a" / "world_detection.h5") as fa, h5py.File(tmp_path / "b" / "world_detection.h5") as fb:
        assert np.array_equal(fa["dets_labels"][:], fb["dets_labels"][:])


def _objects_and_detections(root):
    """Per image (file order): GT object count and detection count."""
    inst = json.loads((root / "annotations" / "instances_world.json").read_text())
    karpathy = json.loads((root / "dataset_world.json").read_text())["images"]
    per_image = {im["id"]: 0 for im in inst["images"]}
    for a in inst["annotations"]:
        per_image[a["image_id"]] += 1
    with h5py.File(root / "world_detection.h5") as f:
        dets = f["dets_num"][:]
    return [per_image[im["cocoid"]] for im in karpathy], dets.tolist()


def test_world_parameters_configurable(tmp_path):
    no_noise = dict(det_duplicates=0.0, det_false_pos=0.0)
    summary = generate(WorldConfig(out=str(tmp_path / "a"), seed=1, n_images=10, image_size=96,
                                   categories=["circle", "square", "star", "moon"], noc_held_out=["moon"],
                                   max_objects=2, det_miss=0.0, **no_noise), quiet=True)
    assert summary["images"] == 10
    assert ClassNames.read(tmp_path / "a" / "world_class_name.txt").names == ("circle", "square", "star", "moon")
    assert {Image.open(p).size for p in (tmp_path / "a" / "images" / "world").iterdir()} == {(96, 96)}
    objects, dets = _objects_and_detections(tmp_path / "a")
    assert max(objects) == 2 and min(objects) >= 1                   # max_objects (10 images reach it)
    assert dets == objects                                            # det_miss 0: one detection per object
    generate(WorldConfig(out=str(tmp_path / "b"), seed=1, n_images=10, det_miss=1.0, **no_noise), quiet=True)
    objects, dets = _objects_and_detections(tmp_path / "b")
    assert max(objects) > 2 and dets == [0] * 10                      # det_miss 1: every object missed
    with pytest.raises(ValueError, match="unknown world category"):
        generate(WorldConfig(out=str(tmp_path / "x"), categories=["circle", "blob"]), quiet=True)


def test_world_cli_bad_option_fails(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT
    r = subprocess.run([sys.executable, "prepro/world.py", "--out", str(tmp_path), "--categories", "circle,blob"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "blob" in r.stderr
