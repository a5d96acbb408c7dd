"""Bad input to the demo and the API: checkpoint files, weight files, images, proposals. Each gets
a one-line message (DataError) naming the file, image or row, never a traceback or a crash."""
import pytest
import torch

from nbt.misc.checkpoint import load_checkpoint
from nbt.misc.io import DataError


@pytest.mark.parametrize("content, says", [
    (None, "empty"),
    ({"rnn.weight": torch.zeros(2)}, "bare state dict"),
    ([1, 2, 3], "a list"),
    ({"model": {}}, "without 'config'"),
    (b"\x80\x04garbage", "cannot load checkpoint"),
    (b"# A README\nsome text, not a checkpoint\n", "not a file of tensors torch.save wrote"),
])
def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, content, says):
    path = tmp_path / "model.pth"
    if content is None:
        path.write_bytes(b"")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        load_checkpoint(tmp_path)
    msg = str(err.value)
    assert says in msg and str(path) in msg and "\n" not in msg
    assert "weights_only" not in msg and "Re-running" not in msg      # never advice to load it unsafely


# -- images ---------------------------------------------------------------------------------------
def sideways_jpeg(path, orientation: int = 6):
    """A 40x20 JPEG, left half white, tagged 'rotate 90 degrees clockwise to display' (6) as phones
    write it: shown upright it is 20 wide, 40 high, with the white half on top."""
    import numpy as np
    from PIL import Image
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied_when_an_image_is_read(tmp_path):
    import numpy as np

    from nbt.misc.transforms import load_image
    im = load_image(sideways_jpeg(tmp_path / "phone.jpg"))
    a = np.asarray(im, np.float32)
    assert im.size == (20, 40)
    assert a[:16].mean() > 240 and a[-16:].mean() < 15


def test_exif_orientation_is_applied_to_the_api_and_the_training_reader(world_run, tmp_path):
    import numpy as np
    from PIL import Image

    from nbt.misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained(world_run)
    path = sideways_jpeg(tmp_path / "phone.jpg")
    rows = np.array([[0, 0, 20, 20, 1, 0.9]], np.float32)     # the white upper half, upright
    for image in (path, Image.open(path)):
        [r] = cap.generate([image], [rows])
        assert (r.width, r.height) == (20, 40)
    import nbt.misc.dataset
    assert nbt.misc.dataset.load_image(path).size == (20, 40)


def test_a_float_tiff_is_scaled_by_its_range_not_read_as_black(tmp_path):
    import numpy as np
    from PIL import Image

    from nbt.misc.transforms import load_image
    values = np.linspace(0.0, 1.0, 64 * 32, dtype=np.float32).reshape(32, 64)   # a 0..1 float image
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    im = load_image(tmp_path / "float.tif")
    a = np.asarray(im)
    assert im.mode == "RGB" and a.min() == 0 and a.max() == 255
    assert abs(float(a[..., 0].mean()) - 127.5) < 2                      # a linear ramp stays linear


def test_a_float_tiff_without_finite_pixels_is_refused_with_a_message(tmp_path):
    import numpy as np
    from PIL import Image

    from nbt.misc.transforms import load_image
    Image.fromarray(np.full((8, 8), np.nan, np.float32), "F").save(tmp_path / "nan.tif")
    with pytest.warns(UserWarning, match="nan.tif.*no finite pixel"):
        assert load_image(tmp_path / "nan.tif") is None


# -- detector weights -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco_classes():
    from conftest import ROOT
    from nbt.misc.vocab import ClassNames
    return ClassNames.read(ROOT / "data" / "coco" / "coco_class_name.txt")


@pytest.fixture
def offline(monkeypatch):
    """torchvision's weight download fails as it does without a network (and is never tried)."""
    import urllib.error

    from torchvision.models._api import WeightsEnum

    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)


def test_no_detector_weights_offline_is_one_line_naming_the_flag(coco_classes, offline):
    from nbt.misc.detector import FasterRCNN
    with pytest.raises(DataError) as err:
        FasterRCNN(coco_classes)
    msg = str(err.value)
    assert "\n" not in msg and "--detector_weights PATH" in msg and "cannot be downloaded" in msg


@pytest.mark.parametrize("content, says", [
    (b"", "empty file"),
    (b"PK\x03\x04 not really a zip", "not a readable weights file"),
    ({"backbone.weight": torch.zeros(3)}, "not fasterrcnn_resnet50_fpn_v2 weights"),
    ([torch.zeros(3)], "not a state dict"),
])
def test_corrupt_detector_weights_are_one_line(coco_classes, tmp_path, content, says):
    from nbt.misc.detector import FasterRCNN
    path = tmp_path / "frcnn.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError) as err:
        FasterRCNN(coco_classes, weights=str(path))
    assert says in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_detector_that_shares_no_class_with_the_run_is_refused_before_any_download(world_dir, offline):
    from nbt.misc.detector import FasterRCNN
    from nbt.misc.vocab import ClassNames
    with pytest.raises(DataError, match=r"this run knows classes circle, .*; the detector .* names person, .*none in common"):
        FasterRCNN(ClassNames.read(world_dir / "world_class_name.txt"))


# -- checkpoints through the demo -----------------------------------------------------------------
def test_the_demo_given_a_bare_state_dict_says_so_in_one_line(tmp_path, capsys):
    from nbt import demo
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pth")
    assert demo.main(["--start_from", str(tmp_path / "model.pth"), "--demo_out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bare state dict" in err[0]


# -- proposals ------------------------------------------------------------------------------------
def test_validate_proposals_keeps_good_rows_clipped_and_names_each_bad_one():
    import numpy as np

    from nbt.misc.proposals import validate_proposals
    nan, inf = float("nan"), float("inf")
    rows = [[1, 2, 3, 4, 1, 0.5], [nan, 0, 1, 1, 1, 1], [0, 0, inf, 1, 1, 1], [5, 5, 1, 1, 1, 1],
            [0, 0, 10, 10, 9, 1], [0, 0, 10, 10, 1.5, 1], [200, 0, 300, 10, 1, 1], [-5, -5, 500, 500, 2, 0.3],
            [1, 1, 2, 2, 1, nan]]
    clean, problems = validate_proposals(rows, 100, 50, 8)
    assert clean.dtype == np.float32 and clean.tolist() == [[1, 2, 3, 4, 1, 0.5], [0, 0, 100, 50, 2, 0.30000001192092896]]
    assert [p.split(":")[0] for p in problems] == ["row 1", "row 2", "row 3", "row 4", "row 5", "row 6", "row 8"]
    assert "NaN or infinite" in problems[0] and "x1 > x2" in problems[2] and "class 9 is not one of 1..8" in problems[3]
    assert "outside the 100x50 image" in problems[5]
    assert validate_proposals(np.zeros((3, 5)), 10, 10, 3)[1] == [
        "expected rows of 6 values [x1, y1, x2, y2, class, score], got an array of shape (3, 5)"]
    assert validate_proposals([], 10, 10, 3)[0].shape == (0, 6)
    assert validate_proposals([["a"] * 6], 10, 10, 3)[1] == ["not an array of numbers"]
