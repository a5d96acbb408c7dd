"""The web page's function (tools/web_demo.py), called directly: a world image, bad uploads, options.
The running app (HTTP API, load, headless Chromium) is tested in test_web_app.py."""
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import ROOT, require_module

gr = require_module("gradio")

from nbt.misc.api import NBTCaptioner  # noqa: E402
from nbt.tools import web_demo  # noqa: E402


def bomb_png(path, width: int, height: int, *, bits: int = 8, colour: int = 2) -> int:
    """A valid PNG of width x height black pixels, a few hundred KB at most (rows of zeros compress
    ~1000:1) that decodes to width x height x 3 bytes; colour 0 = grey, 2 = RGB. Returns its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (1 + (width * bits * (3 if colour == 2 else 1) + 7) // 8)   # filter byte + pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * min(1000, height - y)) for y in range(0, height, 1000)) + z.flush()
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    path.write_bytes(data)
    return len(data)


@pytest.fixture(scope="module")
def cap(world_run):
    return NBTCaptioner.from_pretrained(world_run)


@pytest.fixture(scope="module")
def world_images(cap):
    return web_demo.example_images(cap, 3)


@pytest.fixture
def decodes(monkeypatch):
    """Counts pixel decodes: PIL decodes an image's data only in ImageFile.load."""
    calls = []
    load = ImageFile.ImageFile.load

    def counting_load(self):
        calls.append(self.size)
        return load(self)
    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    return calls


def test_world_image_gets_the_same_caption_as_the_api_with_boxes_table_and_json(cap, world_images):
    web = web_demo.WebCaptioner(cap)
    (picture, masks), segments, table, result = web.page(world_images[0], 2, True, "all", 2)
    expected = cap.generate([world_images[0]], beam_size=2, cbs=True, cbs_mode="all", cbs_tag_size=2)[0]
    assert result["tagged"] == expected["tagged"] and result["grounding"] == expected["grounding"]
    assert result["proposals"], "a world image is captioned with the world's own detections"
    assert "".join(text for text, _ in segments) == result["tagged"]
    assert [label for _, label in segments if label] == [g["class"] for g in result["grounding"]]
    assert [row[:2] for row in table] == [[g["word"], g["class"]] for g in result["grounding"]]
    assert max(picture.size) == 480                                              # 128 px shown at 480
    assert sorted(c for _, c in masks) == sorted({g["class"] for g in result["grounding"]})   # once each
    k = 480 / 128
    for g in result["grounding"]:
        mask = dict((c, m) for m, c in masks)[g["class"]]
        assert mask.shape == picture.size[::-1] and mask[round(g["box"][1] * k), round(g["box"][0] * k)] == 1


def test_gradio_file_dict_and_example_paths_are_the_same_upload(cap, world_images):
    web = web_demo.WebCaptioner(cap)
    as_path = web.page(world_images[1], 1, False, "all", 3)[3]
    as_dict = web.page({"path": world_images[1], "orig_name": "x.png"}, 1, False, "all", 3)[3]
    assert as_path == as_dict
    assert web.page_on_change(None, 1, False, "all", 3) == (None, None, None, None)   # cleared: no error


@pytest.mark.parametrize("name, message", [
    ("text", "not an image"),
    ("empty", "empty (0 bytes)"),
    ("bomb_20000", "over 179 megapixels"),          # PIL's own decompression-bomb guard, at open
    ("bomb_7999", "7999 x 7999 = 64 megapixels"),   # the probe: under PIL's guard, over ours
    ("oversize", "this server takes at most 1 MB"),
])
def test_bad_upload_is_refused_with_a_message_before_any_pixel_is_decoded(cap, tmp_path, decodes, name, message):
    path = tmp_path / f"{name}.png"
    if name == "text":
        path.write_text("hello, this is not a picture\n")
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "bomb_20000":
        assert bomb_png(path, 20000, 20000, bits=1, colour=0) < 100_000     # 400 megapixels in < 100 KB
    elif name == "bomb_7999":
        assert bomb_png(path, 7999, 7999) < 400_000                          # 192 MB decoded, < 400 KB file
    else:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 800, 3), np.uint8)).save(path)
        assert path.stat().st_size > 1 << 20
    web = web_demo.WebCaptioner(cap, web_demo.Limits(max_bytes=1 << 20, max_pixels=50_000_000))
    with pytest.raises(gr.Error, match=re.escape(message)):
        web.page(str(path), 1, False, "all", 3)
    assert decodes == []


def test_a_truncated_image_is_a_message_not_a_traceback(cap, world_images, tmp_path):
    data = open(world_images[0], "rb").read()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(gr.Error, match="could not be decoded: unreadable image"):
        web_demo.WebCaptioner(cap).page(str(path), 1, False, "all", 3)


@pytest.mark.parametrize("options, message", [
    ((0, False, "all", 3), "beam_size 0 is not within 1..10"),
    ((3, True, "unqiue", 3), "'unqiue' is not one of all, unique, novel"),
    ((3, True, "all", 99), "cbs_tag_size 99 is not within 1..3"),
    (("three", False, "all", 3), "beam_size 'three' is not a number"),
    ((2.5, False, "all", 3), "beam_size 2.5 is not a whole number"),
])
def test_api_options_out_of_range_are_a_message(cap, world_images, options, message):
    with pytest.raises(gr.Error, match=re.escape(message)):
        web_demo.WebCaptioner(cap).page(world_images[0], *options)


def test_a_photo_on_a_world_run_is_a_message_saying_why_it_cannot_be_captioned(cap, tmp_path):
    Image.new("RGB", (200, 150), "white").save(tmp_path / "photo.jpg")     # not a world image
    with pytest.raises(gr.Error, match="not an image of this run's data set"):
        web_demo.WebCaptioner(cap).page(str(tmp_path / "photo.jpg"), 1, False, "all", 3)


def test_no_image_is_a_message(cap):
    with pytest.raises(gr.Error, match="no image"):
        web_demo.WebCaptioner(cap).page(None, 1, False, "all", 3)


def test_visual_words_are_labelled_with_their_classes_in_order():
    grounding = [{"class": "circle"}, {"class": "square"}]
    assert web_demo.caption_segments("two [rings] next to a [tile]", grounding) == [
        ("two ", None), ("[rings]", "circle"), (" next to a ", None), ("[tile]", "square")]


def test_large_photo_is_shown_at_800_px_with_its_boxes_outlined_scaled_and_one_mask_per_class():
    photo = Image.new("RGB", (4000, 3000))
    grounding = [{"box": [1000, 1500, 4000, 3000], "class": "dog"}, {"box": [0, 0, 500, 500], "class": "dog"},
                 {"box": [2000, 0, 2500, 500], "class": "cat"}]
    picture, masks = web_demo.display_picture(photo, grounding)
    assert picture.size == (800, 600) and [c for _, c in masks] == ["dog", "cat"]
    dog = masks[0][0]                                       # (600, 800): boxes at 1/5 scale
    assert dog[300, 200] == dog[599, 799] == 1.0 and dog[0, 0] == 1.0 and masks[1][0][0, 450] == 1.0
    # outlines only: inside a box the object's own pixels are shown untinted
    assert dog[450, 500] == 0 and dog[200, 400] == 0 and masks[1][0][50, 450] == 0


def test_help_describes_every_option_and_the_script_imports_neither_demo_nor_main():
    assert all(a.help for a in web_demo.parser()._actions)
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "tools" / "web_demo.py"), "--help"],
                         cwd="/", capture_output=True, text=True, timeout=120)      # run from anywhere
    assert out.returncode == 0, out.stderr[-2000:]
    for option in ("--start_from", "--detector_weights", "--host", "--port", "--max_upload_mb",
                   "--max_megapixels", "--concurrency", "--queue_size", "--examples"):
        assert option in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert "nbt.misc.api" in imported and {"nbt.demo", "nbt.main", "demo", "main"}.isdisjoint(imported)


def test_a_missing_run_is_one_line_and_exit_2(tmp_path, capsys):
    assert web_demo.main(["--start_from", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint at") and err.count("\n") == 1
