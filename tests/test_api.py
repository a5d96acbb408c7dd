"""misc/api.py: NBTCaptioner on the built-in world with a randomly initialised run (the pipeline,
not the words): which proposals an image gets, what a result holds, what bad input gets."""
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from nbt.misc.api import NBTCaptioner
from nbt.misc.io import read_json


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


def test_boxes_are_in_original_pixels_for_a_picture_of_another_size(cap):
    """The model sees a 64x64 resize of this 200x100 picture; every box comes back in 200x100 pixels."""
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 255, (100, 200, 3), dtype=np.uint8))
    rows = np.array([[10, 20, 150, 90, 1, 0.99], [160, 5, 195, 40, 2, 0.95]], np.float32)
    [r] = cap.generate([photo], [rows], cbs=True, cbs_tag_size=2)
    assert (r.width, r.height, r.source) == (200, 100, "caller")
    assert np.allclose(boxes_of(r), rows[:, :4], atol=0.02)
    assert r.grounding, "cbs must ground two words"
    for g in r.grounding:
        assert g["box"] == r.proposals[g["region"]]["box"]


def test_the_result_is_typed_documented_and_json_ready(cap):
    import json

    from nbt.misc.api import CaptionResult
    path, _ = world_image(cap)
    [r] = cap.generate([path], beam_size=2)
    assert isinstance(r, CaptionResult) and isinstance(r.caption, str) and r.tagged == r["tagged"]
    assert set(r.to_dict()) == set(CaptionResult.FIELDS) and r.source == "run"
    assert json.loads(json.dumps(r)) == r.to_dict()
    for key in CaptionResult.FIELDS:
        assert key in NBTCaptioner.generate.__doc__ + CaptionResult.__doc__
    assert ">>>" in NBTCaptioner.generate.__doc__


@pytest.mark.parametrize("row, says", [
    ([float("nan"), 1, 20, 20, 1, 0.9], "row 1: a value is NaN or infinite"),
    ([1, 1, float("inf"), 20, 1, 0.9], "row 1: a value is NaN or infinite"),
    ([30, 1, 20, 20, 1, 0.9], "row 1: box [30, 1, 20, 20] has x1 > x2"),
    ([1, 1, 20, 20, 99, 0.9], "row 1: class 99 is not one of 1..8"),
    ([1, 1, 20, 20, 0, 0.9], "row 1: class 0 is not one of 1..8"),
    ([500, 500, 600, 600, 1, 0.9], "lies outside the 128x128 image"),
])
def test_bad_proposal_rows_are_an_error_naming_image_and_row(cap, row, says):
    """NaN boxes used to crash the process inside roi_align; bad classes were an IndexError."""
    from nbt.misc.io import DataError
    path, _ = world_image(cap)
    rows = np.array([[1, 1, 20, 20, 1, 0.9], row], np.float64)
    with pytest.raises(DataError) as err:
        cap.generate([path, path], [rows[:1], rows])
    assert str(err.value).startswith(f"{path}: proposals ") and says in str(err.value)


def test_proposals_with_the_wrong_shape_are_an_error(cap):
    from nbt.misc.io import DataError
    img = Image.new("RGB", (50, 40))
    with pytest.raises(DataError, match=r"image 0: proposals expected rows of 6 values .* shape \(2, 5\)"):
        cap.generate([img], [np.zeros((2, 5))])
    with pytest.raises(ValueError, match="2 images but 1 proposal"):
        cap.generate([img, img], [np.zeros((0, 6))])


def test_boxes_reaching_outside_the_picture_are_clipped(cap):
    img = Image.new("RGB", (50, 40), "white")
    [r] = cap.generate([img], [np.array([[-10, -5, 80, 30, 3, 0.7]], np.float32)])
    assert r.proposals[0]["box"] == pytest.approx([0, 0, 50, 30], abs=0.02)


@pytest.mark.parametrize("kwargs, says", [
    (dict(beam_size=0), "beam_size must be an integer in 1..100"),
    (dict(cbs_mode="unqiue"), "cbs_mode must be one of all, unique, novel"),
    (dict(cbs_tag_size=99), "cbs_tag_size must be an integer in 1..8"),
    (dict(max_len=0), "max_len"),
])
def test_bad_arguments_are_one_line_value_errors(cap, kwargs, says):
    with pytest.raises(ValueError, match=says):
        cap.generate([Image.new("RGB", (8, 8))], [np.zeros((0, 6))], **kwargs)


def test_unreadable_images_name_the_image(cap, tmp_path):
    from nbt.misc.io import DataError
    with pytest.raises(DataError, match="image 1: unreadable image .*not an image file"):
        cap.generate([Image.new("RGB", (8, 8)), b"not an image"], [np.zeros((0, 6))] * 2)
    with pytest.raises(DataError, match="missing.jpg"):
        cap.generate([tmp_path / "missing.jpg"])
    with pytest.raises(ValueError, match="must be a list"):
        cap.generate("photo.jpg")


def test_uploads_as_bytes_and_arrays_are_recognised_as_the_runs_own(cap):
    path, rows = world_image(cap)
    for image in (path.read_bytes(), np.asarray(Image.open(path).convert("RGB"))):
        [r] = cap.generate([image])
        assert r.source == "run" and np.allclose(boxes_of(r), rows[:, :4], atol=0.02)


def test_a_photo_on_a_world_run_is_one_line_naming_the_reason(cap):
    """A world run shares no class with torchvision's COCO detector: no download is tried."""
    from nbt.misc.io import DataError
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    with pytest.raises(DataError) as err:
        cap.generate([photo])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("image 0 is not an image of this run's data set")
    assert "this run knows classes circle" in msg and "none in common" in msg
