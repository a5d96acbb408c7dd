"""The CBS score threshold is measured on the data (a precision), so a detector with another score
scale picks the same constraints without anyone guessing a new threshold."""
import dataclasses
import json

import h5py
import numpy as np
import pytest
import torch

from conftest import world_options
from nbt.misc.calibration import detection_scores, precision_threshold, resolve_score_thresholds


def test_threshold_is_the_lowest_score_keeping_the_precision():
    s = np.array([.9, .8, .8, .7, .6, .5])
    c = np.array([1, 1, 0, 1, 0, 0], bool)
    assert precision_threshold(s, c, 1.0) == pytest.approx(0.9)
    assert precision_threshold(s, c, 0.75) == pytest.approx(0.7)     # 0.8 holds a wrong detection: 2/3
    assert precision_threshold(s, c, 0.5) == pytest.approx(0.5)
    assert precision_threshold(s, ~c, 0.9) > 0.9                       # nothing is trusted


@pytest.mark.parametrize("rescale", [lambda s: 0.3 * s, lambda s: s ** 3, lambda s: 1 / (1 + np.exp(-8 * (s - .5)))])
def test_any_monotonic_rescaling_moves_the_threshold_with_the_scores(rescale):
    rng = np.random.default_rng(0)
    s = rng.random(500)
    c = rng.random(500) < s                                            # better scores are more often right
    t = precision_threshold(s, c, 0.8)
    assert precision_threshold(rescale(s), c, 0.8) == pytest.approx(rescale(t))


def rescaled_h5(src, dst, rescale):
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        for k in f:
            g.create_dataset(k, data=f[k][()])
        labels = g["dets_labels"][()]
        labels[..., 5] = rescale(labels[..., 5])
        g["dets_labels"][...] = labels


def test_world_detector_rescaled_to_low_scores_gives_the_same_constraints_and_targets(world_dir, tmp_path):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.decoding import select_constraints
    low = tmp_path / "low.h5"
    rescaled_h5(world_dir / "world_detection.h5", low, lambda s: 0.4 * s ** 2)
    opts = [world_options(world_dir, "noc"), world_options(world_dir, "noc", proposal_h5=str(low))]
    picked, targets, thresholds = [], [], []
    for opt in opts:
        bundle = DataBundle.load(opt)                    # calibrates both thresholds for its detector
        thresholds.append((bundle.opt.cbs_score_thresh, bundle.opt.pos_score_thresh))
        items = [CaptionDataset(bundle, "train", train=False)[(i, 0)] for i in range(24)]
        targets.append(collate(items)["pos"])
        batch = collate([CaptionDataset(bundle, "test", train=False)[(i, 0)] for i in range(24)])
        picked.append(select_constraints(batch["proposals"], batch["prop_mask"], n_constraints=2, mode="unique",
                                         score_thresh=bundle.opt.cbs_score_thresh, novel_classes=bundle.held_out))
    for high, low_t in zip(*thresholds):
        assert low_t == pytest.approx(0.4 * high ** 2, rel=1e-5)
    assert torch.equal(picked[0], picked[1]) and (picked[0] >= 0).any()
    assert torch.equal(targets[0], targets[1]) and targets[0].any()


def test_explicit_thresholds_are_kept_and_missing_data_falls_back_to_the_original(world_dir, capsys):
    from nbt.misc.dataset import DataBundle
    opt = world_options(world_dir, cbs_score_thresh=0.55, pos_score_thresh=0.3)
    bundle = DataBundle.load(opt)
    assert (bundle.opt.cbs_score_thresh, bundle.opt.pos_score_thresh) == (0.55, 0.3)
    fallback = resolve_score_thresholds(dataclasses.replace(opt, cbs_score_thresh=-1.0, pos_score_thresh=-1.0))
    assert (fallback.cbs_score_thresh, fallback.pos_score_thresh) == (0.8, 0.5)
    assert "original's" in capsys.readouterr().err


def _threshold_by_hand(world_dir, split: str, min_precision: float) -> float:
    """The definition applied to the world's files without the project's code: a detection is right
    when it overlaps (IoU > 0.5) a GT box of its class; the threshold is the lowest score s at
    which the detections scoring >= s are right min_precision of the time."""
    dic = json.loads((world_dir / "dic_world.json").read_text())
    inst = json.loads((world_dir / "annotations" / "instances_world.json").read_text())
    lines = (world_dir / "world_class_name.txt").read_text().splitlines()
    line_of = {ln.split(",")[0].strip(): i + 1 for i, ln in enumerate(lines) if ln.strip()}
    cat = {c["id"]: line_of[c["name"]] for c in inst["categories"]}
    gt = {}
    for a in inst["annotations"]:
        x, y, w, h = a["bbox"]
        gt.setdefault(a["image_id"], []).append((x, y, x + w, y + h, cat[a["category_id"]]))

    def iou(a, b):
        iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
        return iw * ih / union
    with h5py.File(world_dir / "world_detection.h5") as f:
        labels, num = f["dets_labels"][:], f["nms_num"][:]
    scores, right = [], []
    for row, im in enumerate(dic["images"]):                       # h5 rows = the dic's images
        if im["split"] != split:
            continue
        for d in labels[row, :num[row]].tolist():
            scores.append(d[5])
            right.append(any(int(d[4]) == g[4] and iou(d, g) > 0.5 for g in gt.get(im["id"], [])))
    scores, right = np.array(scores), np.array(right)
    return float(min(s for s in np.unique(scores) if right[scores >= s].mean() >= min_precision))


def test_world_thresholds_are_those_the_world_was_tuned_with(world_dir):
    """The calibrated thresholds are the definition's, computed here by hand; and the world's
    detector was tuned with the original's 0.5 for pointer targets: the default precision
    reproduces it (within the score spacing of the detector)."""
    from nbt.misc.dataset import DataBundle
    bundle = DataBundle.load(world_options(world_dir))
    scores, correct, n = detection_scores(bundle)
    assert n == len(bundle.rows("train")) and len(scores) == len(correct) > 100
    for key, precision in (("pos_score_thresh", "pos_min_precision"), ("cbs_score_thresh", "cbs_min_precision")):
        want = _threshold_by_hand(world_dir, "train", getattr(bundle.opt, precision))
        assert getattr(bundle.opt, key) == pytest.approx(want, abs=1e-6), key
    assert 0.4 <= bundle.opt.pos_score_thresh <= 0.6
