"""misc/api.py: NBTCaptioner on the built-in world with a randomly initialised run (the pipeline,
not the words): which proposals an image gets, what a result holds, what bad input gets."""
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from misc.api import NBTCaptioner
from misc.io import read_json


@pytest.fixture(scope="module")
def cap(world_run):
    return NBTCaptioner.from_pretrained(world_run)


def world_image(cap, row: int = 3):
    """(path, h5 rows) of data-set row `row`, read here from the files, not through the API."""
    from pathlib import Path
    info = read_json(cap.opt.input_dic)["images"][row]
    with h5py.File(cap.opt.proposal_h5, "r") as f:
        rows = f["dets_labels"][row, :int(f["nms_num"][row])]
    return Path(cap.opt.image_path) / info["file_path"], rows


def boxes_of(result) -> np.ndarray:
    return np.array([p["box"] for p in result["proposals"]], np.float32).reshape(-1, 4)


class RecordingDetector:
    def __init__(self):
        self.seen = []

    def __call__(self, images):
        self.seen += [im.size for im in images]
        return [np.array([[1, 1, 20, 20, 1, 0.9]], np.float32) for _ in images]


def test_world_images_get_the_runs_own_detections_by_path_copy_and_pixels(cap, tmp_path):
    path, rows = world_image(cap)
    assert len(rows) > 0
    copy = tmp_path / "holiday.png"
    shutil.copy(path, copy)
    with Image.open(path) as im:
        pil = im.convert("RGB")
    for image in (path, str(path), copy, pil):
        got = cap.generate([image])[0]
        assert np.allclose(boxes_of(got), rows[:, :4], atol=0.02), image
        assert [p["class"] for p in got["proposals"]] == [cap.classes.names[int(c) - 1] for c in rows[:, 4]]


def test_the_pixel_index_is_built_on_first_need_not_at_load(world_run):
    fresh = NBTCaptioner.from_pretrained(world_run)
    assert fresh.own._by_pixels is None
    path, _ = world_image(fresh)
    fresh.generate([path])                                    # matched by path: no decoding of the data set
    assert fresh.own._by_pixels is None
    with Image.open(path) as im:
        fresh.generate([im.convert("RGB")])
    assert fresh.own._by_pixels and len(fresh.own._by_pixels) > 100


def test_only_images_outside_the_data_set_go_to_the_detector(cap, monkeypatch):
    det = RecordingDetector()
    monkeypatch.setattr(cap, "_detector", det)
    path, rows = world_image(cap)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8))
    own, other = cap.generate([path, photo])
    assert det.seen == [(130, 90)]
    assert len(own["proposals"]) == len(rows) and len(other["proposals"]) == 1
