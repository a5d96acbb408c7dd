"""Bad input to the demo and the API: checkpoint files, weight files, images, proposals. Each gets
a one-line message (DataError) naming the file, image or row, never a traceback or a crash."""
import pytest
import torch

from misc.checkpoint import load_checkpoint
from misc.io import DataError


@pytest.mark.parametrize("content, says", [
    (None, "empty"),
    ({"rnn.weight": torch.zeros(2)}, "bare state dict"),
    ([1, 2, 3], "a list"),
    ({"model": {}}, "without 'config'"),
    (b"\x80\x04garbage", "cannot load checkpoint"),
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

    from misc.transforms import load_image
    im = load_image(sideways_jpeg(tmp_path / "phone.jpg"))
    a = np.asarray(im, np.float32)
    assert im.size == (20, 40)
    assert a[:16].mean() > 240 and a[-16:].mean() < 15


def test_a_float_tiff_is_scaled_by_its_range_not_read_as_black(tmp_path):
    import numpy as np
    from PIL import Image

    from misc.transforms import load_image
    values = np.linspace(0.0, 1.0, 64 * 32, dtype=np.float32).reshape(32, 64)   # a 0..1 float image
    Image.fromarray(values, "F").save(tmp_path / "float.tif")
    im = load_image(tmp_path / "float.tif")
    a = np.asarray(im)
    assert im.mode == "RGB" and a.min() == 0 and a.max() == 255
    assert abs(float(a[..., 0].mean()) - 127.5) < 2                      # a linear ramp stays linear


def test_a_float_tiff_without_finite_pixels_is_refused_with_a_message(tmp_path):
    import numpy as np
    from PIL import Image

    from misc.transforms import load_image
    Image.fromarray(np.full((8, 8), np.nan, np.float32), "F").save(tmp_path / "nan.tif")
    with pytest.warns(UserWarning, match="nan.tif.*no finite pixel"):
        assert load_image(tmp_path / "nan.tif") is None
