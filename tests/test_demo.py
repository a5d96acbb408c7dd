"""demo.py end to end: a world image (its own detector) and real coco-mini photos (JSON detections,
and torchvision Faster R-CNN), with randomly initialised models: the pipeline, not the words."""
import json

import pytest
import torch
from PIL import Image

from nbt import demo
from nbt.misc.config import ConfigError
from conftest import COCO_MINI, needs_coco_mini


def test_demo_on_world_images_default_split(world_run, tmp_path):
    assert demo.main(["--start_from", world_run, "--demo_out", str(tmp_path), "--demo_max_images", "3"]) == 0
    pics = sorted(tmp_path.glob("*.jpg"))
    assert len(pics) == 3
    record = json.loads(pics[0].with_suffix(".json").read_text())
    assert {"caption", "tagged", "grounding", "proposals"} <= set(record)
    im = Image.open(pics[0])
    assert im.height > 64                                  # image + caption strip
    assert len(json.loads((tmp_path / "visu.json").read_text())) == 3


def test_the_original_readme_demo_command_runs(world_run, tmp_path):
    """`python demo.py --cbs True --cbs_tag_size 2 --cbs_mode unique --start_from save/<run>`, as the
    original's README gives it (plus where to write and how many images)."""
    import shlex
    line = f"--cbs True --cbs_tag_size 2 --cbs_mode unique --start_from {world_run}"
    assert demo.main(shlex.split(line) + ["--demo_out", str(tmp_path), "--demo_max_images", "2"]) == 0
    assert len(list(tmp_path.glob("*.jpg"))) == 2


def test_demo_cbs_on_a_world_image(world_run, world_dir, tmp_path):
    """--cbs reaches the decoding. The run is made to end every caption at once (EOS bias +10):
    without CBS it says nothing; with --cbs it must still name the two best proposals."""
    import shutil
    from nbt.misc.checkpoint import load_checkpoint
    run = tmp_path / "quiet_run"
    shutil.copytree(world_run, run)
    ckpt = load_checkpoint(run / "model.pth")
    ckpt["model"]["decoder.logit.bias"][0] += 10.0
    torch.save(ckpt, run / "model.pth")
    img = sorted((world_dir / "images" / "world").glob("*.png"))[0]
    records = {}
    for cbs in ("False", "True"):
        out = tmp_path / f"cbs_{cbs}"
        assert demo.main(["--start_from", str(run), "--demo_path", str(img), "--demo_out", str(out),
                          "--cbs", cbs, "--cbs_tag_size", "2", "--beam_size", "2"]) == 0
        records[cbs] = json.loads((out / f"{img.stem}.json").read_text())
    assert records["False"]["grounding"] == []
    props = records["True"]["proposals"]
    assert len(props) >= 2                                  # the world image has its detections
    top2 = sorted(range(len(props)), key=lambda i: -props[i]["score"])[:2]
    assert set(top2) <= {g["region"] for g in records["True"]["grounding"]}    # CBS "all": the two best


def test_palette_has_no_fixed_limit():
    colours = demo.palette(40)
    assert len(set(colours)) == 40


def test_demo_bad_input_one_line(world_run, tmp_path, capsys):
    assert demo.main(["--start_from", world_run, "--demo_path", str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jpg" in err[0]
    assert demo.main(["--start_from", world_run, "--beam_sise", "2"]) == 2


@needs_coco_mini
def test_demo_on_real_coco_mini_photos(tmp_path, monkeypatch, capsys):
    from nbt.misc.session import train
    from test_coco_mini import mini_options
    from nbt.prepro import prepro_det, prepro_dic_coco
    ann = COCO_MINI / "annotations"
    from test_coco_mini import CLASSES
    prepro_dic_coco.main(["--captions_json", str(ann / "captions_train2017.json"), str(ann / "captions_val2017.json"),
                          "--class_name_file", str(CLASSES), "--output_dic", str(tmp_path / "dic.json"),
                          "--output_cap", str(tmp_path / "cap.json"), "--word_count_threshold", "1"])
    prepro_det.main(["--input_dic", str(tmp_path / "dic.json"), "--class_name_file", str(CLASSES),
                     "--output_h5", str(tmp_path / "det.h5"), "--from_json", str(COCO_MINI / "detections_fastestdet.json")])
    opt = mini_options(tmp_path, id="coco_demo", checkpoint_path=str(tmp_path / "save"), max_iters=1,
                       eval_split="", rnn_size=32, input_encoding_size=16, att_hid_size=16, att_feat_size=32,
                       class_emb_size=8, loc_emb_size=8, batch_size=4, val_every_epoch=0, cuda=False)
    run = train(opt)["dir"]
    photo = sorted((COCO_MINI / "val2017").glob("*.jpg"))[0]
    out = tmp_path / "visu"
    assert demo.main(["--start_from", run, "--demo_path", str(photo), "--demo_out", str(out),
                      "--demo_detections", str(COCO_MINI / "detections_fastestdet.json"), "--cbs", "True"]) == 0
    record = json.loads((out / f"{photo.stem}.json").read_text())
    assert record["proposals"] and Image.open(out / f"{photo.stem}.jpg").size[0] == Image.open(photo).size[0]
    # torchvision Faster R-CNN from a local weights file, on the grayscale unlabelled photo
    from torchvision.models.detection import fasterrcnn_resnet50_fpn_v2
    torch.manual_seed(0)
    det = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    torch.save(det.state_dict(), tmp_path / "frcnn.pth")
    gray = COCO_MINI / "val2017-unlabeled" / "000000431848.jpg"
    assert demo.main(["--start_from", run, "--demo_path", str(gray), "--demo_out", str(out),
                      "--detector_weights", str(tmp_path / "frcnn.pth")]) == 0
    assert (out / "000000431848.jpg").is_file() and (out / "000000431848.json").is_file()
    # offline without --detector_weights: one line naming the flag, exit 2, nothing written
    import urllib.error

    from torchvision.models._api import WeightsEnum

    def no_network(self, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)
    other = COCO_MINI / "val2017-unlabeled" / "000000012280.jpg"
    capsys.readouterr()
    assert demo.main(["--start_from", run, "--demo_path", str(other), "--demo_out", str(tmp_path / "offline")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be downloaded" in err[0] and "--detector_weights PATH" in err[0]
    assert not (tmp_path / "offline").exists()


# -- the command line -----------------------------------------------------------------------------
def test_help_lists_every_option_with_a_description(capsys):
    assert demo.main(["--help"]) == 0
    out = capsys.readouterr().out
    from nbt.misc.config import Options
    for name in demo.DEMO_KEYS:
        assert f"--{name}\n      {Options.fields()[name].metadata['help'][:30]}" in out
    assert "--demo_min_score" in out and "(default: 0.5)" in out and "(default: 'save/world')" in out


def test_the_original_demo_command_parses():
    """The command the original's users type (README of this project and the issue tracker)."""
    args, given = demo.parse_args("--cbs True --cbs_tag_size 2 --cbs_mode unique --start_from save/x".split())
    assert args["cbs"] is True and args["cbs_tag_size"] == 2 and args["cbs_mode"] == "unique"
    assert demo.parse_args(["--beam", "3"])[0]["beam_size"] == 3               # a prefix, as argparse
    with pytest.raises(ConfigError, match="did you mean 'unique'"):
        demo.parse_args(["--cbs_mode", "unqiue"])
    with pytest.raises(ConfigError, match="unknown option '--max_epochs'"):
        demo.parse_args(["--max_epochs", "3"])


def world_copies(world_dir, folder, n=2):
    import shutil
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted((world_dir / "images" / "world").glob("*.png"))[:n]:
        shutil.copy(p, folder / f"copy_{p.name}")
    return folder


def a_photo(path, size=(90, 60), seed=0):
    import numpy as np
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_a_stray_photo_is_skipped_and_the_world_images_still_captioned(world_run, world_dir, tmp_path, capsys):
    folder = world_copies(world_dir, tmp_path / "mixed")
    a_photo(folder / "holiday.jpg")
    assert demo.main(["--start_from", world_run, "--demo_path", str(folder), "--demo_out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert len(list((tmp_path / "out").glob("copy_*.json"))) == 2 and (tmp_path / "out" / "visu.json").is_file()
    assert not list((tmp_path / "out").glob("holiday*"))
    skips = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skips) == 1 and skips[0].startswith("skipped holiday.jpg: not an image of this run's data set")
    assert "skipped 1 of 3 images" in captured.out
    record = json.loads(next((tmp_path / "out").glob("copy_*.json")).read_text())
    assert record["source"] == "run" and record["proposals"]            # the copies got the world's detections


def test_a_photo_alone_on_a_world_run_is_one_error_line_and_exit_2(world_run, tmp_path, capsys):
    photo = a_photo(tmp_path / "photo.jpg")
    assert demo.main(["--start_from", world_run, "--demo_path", str(photo), "--demo_out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {photo}: not an image of this run's data set")
    assert "this run knows classes circle" in err[0] and not (tmp_path / "out").exists()


def test_an_empty_folder_says_no_images(world_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    assert demo.main(["--start_from", world_run, "--demo_path", str(tmp_path / "empty"),
                      "--demo_out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"error: no images in {tmp_path / 'empty'} " \
                                              "(looked for .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"


@pytest.mark.parametrize("where", ["same", "inside"])
def test_an_output_folder_at_or_inside_the_input_folder_is_refused(world_run, world_dir, tmp_path, capsys, where):
    import shutil
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sorted((world_dir / "images" / "world").glob("*.png"))[0], folder / "a.png")   # captionable
    (folder / "a.jpg").write_bytes(b"the user's own a.jpg")                 # where the picture would go
    out = folder if where == "same" else folder / "visu"
    inputs = (folder, folder / "a.png") if where == "same" else (folder,)
    for path in inputs:
        assert demo.main(["--start_from", world_run, "--demo_path", str(path), "--demo_out", str(out)]) == 2
        assert "error: --demo_out" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "a.png"]
    assert (folder / "a.jpg").read_bytes() == b"the user's own a.jpg"


# -- detections from a file -----------------------------------------------------------------------
def detection_json(path, file_name, dets, width=128, height=128):
    entries = [{"image_id": 1, "file_name": file_name, "width": width, "height": height,
                "detections": [{"bbox_xyxy": b, "category_name": c, "score": s} for b, c, s in dets]}]
    path.write_text(json.dumps(entries))
    return path


def test_coco_detections_on_a_world_run_are_an_error_not_nonsense(world_run, world_dir, tmp_path, capsys):
    """Every COCO class is unknown to the world: the caption would be made from no regions."""
    img = sorted((world_dir / "images" / "world").glob("*.png"))[0]
    dets = detection_json(tmp_path / "dets.json", img.name, [([1, 2, 50, 60], "person", 0.9),
                                                             ([5, 5, 30, 30], "dog", 0.8), ([9, 9, 40, 40], "person", 0.7)])
    assert demo.main(["--start_from", world_run, "--demo_path", str(img), "--demo_out", str(tmp_path / "out"),
                      "--demo_detections", str(dets)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "this run knows classes circle, square" in err[0]
    assert "the detections in" in err[0] and "name person, dog" in err[0]


@needs_coco_mini
def test_real_coco_detections_on_a_world_run_are_an_error(world_run, tmp_path, capsys):
    photo = COCO_MINI / "val2017" / "000000000139.jpg"
    assert demo.main(["--start_from", world_run, "--demo_path", str(photo), "--demo_out", str(tmp_path / "out"),
                      "--demo_detections", str(COCO_MINI / "detections_fastestdet.json")]) == 2
    assert "this run knows classes circle" in capsys.readouterr().err


def test_unusable_detection_rows_are_dropped_and_counted(world_run, world_dir, tmp_path, capsys):
    img = sorted((world_dir / "images" / "world").glob("*.png"))[0]
    nan = float("nan")
    dets = detection_json(tmp_path / "dets.json", img.name, [
        ([1, 2, 50, 60], "circle", 0.9), ([nan, 2, 50, 60], "square", 0.8), ([60, 2, 50, 60], "star", 0.7),
        ([300, 300, 400, 400], "star", 0.6), ([10, 10, 200, 90], "heart", 0.5), ([1, 1, 9, 9], "person", 0.4)])
    assert demo.main(["--start_from", world_run, "--demo_path", str(img), "--demo_out", str(tmp_path / "out"),
                      "--demo_detections", str(dets)]) == 0
    err = capsys.readouterr().err
    assert "dropped 3 unusable detection rows" in err and "dropped 1 of 6 detections of classes this run does not know (person)" in err
    record = json.loads((tmp_path / "out" / f"{img.stem}.json").read_text())
    assert [p["class"] for p in record["proposals"]] == ["circle", "heart"] and record["source"] == "caller"
    assert record["proposals"][1]["box"] == [10, 10, 128, 90]                # clipped to the image


# -- the picture ----------------------------------------------------------------------------------
def result_with(proposals, grounding=(), tagged="a caption"):
    return {"tagged": tagged, "grounding": list(grounding),
            "proposals": [{"box": b, "class": "x", "score": s} for b, s in proposals]}


def test_the_picture_draws_only_top_proposals_above_the_score():
    import numpy as np
    image = Image.new("RGB", (600, 200), "white")
    boxes = [([10 + 12 * i, 10, 14 + 12 * i, 50], 0.95 - 0.01 * i) for i in range(30)]       # 30 confident ones
    boxes += [([10 + 12 * i, 120, 14 + 12 * i, 160], 0.3) for i in range(30)]               # 30 weak ones
    g = {"word": "ring", "region": 29, "box": boxes[29][0], "class": "x", "score": 0.66, "position": 1, "plural": 0}
    picture = np.asarray(demo.draw(image, result_with(boxes, [g]), min_score=0.5, max_boxes=10)).astype(int)
    grey = (np.abs(picture - 150).sum(-1) < 40)
    drawn = [i for i, (b, _) in enumerate(boxes) if grey[b[1], b[0]]]
    assert drawn == list(range(10))                            # the 10 best, none of the weak ones
    assert not grey[110:170].any()
    assert (np.abs(picture[10, boxes[29][0][0]] - np.array(demo.palette(1)[0])).sum() < 60)   # the grounded one


def test_text_scales_with_the_picture_and_words_keep_their_spaces():
    import numpy as np
    assert demo.font_size(480, 480) < demo.font_size(4000, 3000) <= 120

    def ink_gap(width):
        """Widest run of blank columns between 'right' and 'and' in the caption strip."""
        picture = demo.draw(Image.new("RGB", (width, width // 2), "white"), result_with([], tagged="right and"))
        strip = np.asarray(picture.convert("L"))[width // 2:] < 128
        cols = strip.any(0)
        inked = np.flatnonzero(cols)
        runs = np.diff(inked) - 1
        return runs.max(), demo.font_size(width, width // 2)
    for width in (480, 2400):
        gap, size = ink_gap(width)
        assert gap >= 0.25 * size                            # 'right and', not 'rightand'


def test_captions_wrap_at_spaces_keeping_every_word_in_order():
    tokens = demo.caption_tokens("a [potted plant] next to two [people] " + "and a very long caption " * 6)
    assert tokens[1] == "[potted plant]"
    lines = demo.wrap(tokens, 200, lambda t: 9 * len(t), 4)
    assert [t for line in lines for t in line] == tokens and len(lines) > 3
    assert all(sum(9 * len(t) for t in line) + 4 * (len(line) - 1) <= 200 for line in lines)


def test_an_image_left_without_usable_detections_is_skipped_not_captioned_from_nothing(world_run, world_dir, tmp_path, capsys):
    imgs = sorted((world_dir / "images" / "world").glob("*.png"))[:2]
    entries = [{"image_id": 1, "file_name": imgs[0].name, "detections": [
                   {"bbox_xyxy": [1, 2, 50, 60], "category_name": "circle", "score": 0.9}]},
               {"image_id": 2, "file_name": imgs[1].name, "detections": [
                   {"bbox_xyxy": [1, 2, 50, 60], "category_name": "person", "score": 0.9}]}]
    (tmp_path / "dets.json").write_text(json.dumps(entries))
    folder = tmp_path / "in"
    folder.mkdir()
    for p in imgs:
        (folder / p.name).write_bytes(p.read_bytes())
    assert demo.main(["--start_from", world_run, "--demo_path", str(folder), "--demo_out", str(tmp_path / "out"),
                      "--demo_detections", str(tmp_path / "dets.json")]) == 0
    err = capsys.readouterr().err
    assert f"skipped {imgs[1].name}: none of its detections" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == sorted([f"{imgs[0].stem}.json", "visu.json"])
