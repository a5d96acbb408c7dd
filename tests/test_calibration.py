"""The CBS score threshold is measured on the data (a precision), so a detector with another score
scale picks the same constraints without anyone guessing a new threshold."""
import dataclasses

import h5py
import numpy as np
import pytest
import torch

from conftest import world_options
from misc.calibration import calibrate_cbs_threshold, precision_threshold, resolve_cbs_threshold


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


def test_world_detector_rescaled_to_low_scores_gives_the_same_constraints(world_dir, tmp_path):
    from misc.dataset import CaptionDataset, DataBundle, collate
    from misc.decoding import select_constraints
    low = tmp_path / "low.h5"
    rescaled_h5(world_dir / "world_detection.h5", low, lambda s: 0.4 * s ** 2)
    opts = [world_options(world_dir, "noc"), world_options(world_dir, "noc", proposal_h5=str(low))]
    picked, thresholds = [], []
    for opt in opts:
        bundle = DataBundle.load(opt)
        opt = resolve_cbs_threshold(opt, bundle)
        thresholds.append(opt.cbs_score_thresh)
        batch = collate([CaptionDataset(bundle, "test", train=False)[(i, 0)] for i in range(24)])
        picked.append(select_constraints(batch["proposals"], batch["prop_mask"], k=2, mode="unique",
                                         score_thresh=opt.cbs_score_thresh, novel_classes=bundle.held_out))
    assert thresholds[1] == pytest.approx(0.4 * thresholds[0] ** 2, rel=1e-5)
    assert torch.equal(picked[0], picked[1]) and (picked[0] >= 0).any()


def test_an_explicit_threshold_is_kept_and_missing_data_falls_back_to_the_original(world_dir, capsys):
    from misc.dataset import DataBundle
    opt = world_options(world_dir, cbs_score_thresh=0.55)
    assert resolve_cbs_threshold(opt, DataBundle.load(opt)).cbs_score_thresh == 0.55
    assert resolve_cbs_threshold(dataclasses.replace(opt, cbs_score_thresh=-1.0)).cbs_score_thresh == 0.8
    assert "original's 0.8" in capsys.readouterr().err


def test_calibration_counts_its_images(world_dir):
    from misc.dataset import DataBundle
    bundle = DataBundle.load(world_options(world_dir))
    thresh, n = calibrate_cbs_threshold(bundle, 0.9, max_images=20)
    assert n == 20 and 0 < thresh <= 1
