"""demo.py end to end: a world image (its own detector) and real coco-mini photos (JSON detections,
and torchvision Faster R-CNN), with randomly initialised models: the pipeline, not the words."""
import json

import pytest
import torch
from PIL import Image

import demo
from conftest import COCO_MINI


def test_demo_on_world_images_default_split(world_run, tmp_path):
    assert demo.main(["--start_from", world_run, "--demo_out", str(tmp_path), "--demo_max_images", "3"]) == 0
    pics = sorted(tmp_path.glob("*.jpg"))
    assert len(pics) == 3
    record = json.loads(pics[0].with_suffix(".json").read_text())
    assert {"caption", "tagged", "grounding", "proposals"} <= set(record)
    im = Image.open(pics[0])
    assert im.height > 64                                  # image + caption strip
    assert len(json.loads((tmp_path / "visu.json").read_text())) == 3


def test_demo_cbs_on_a_world_image(world_run, world_dir, tmp_path):
    img = sorted((world_dir / "images" / "world").glob("*.png"))[0]
    assert demo.main(["--start_from", world_run, "--demo_path", str(img), "--demo_out", str(tmp_path),
                      "--cbs", "True", "--cbs_tag_size", "2", "--beam_size", "2"]) == 0
    record = json.loads((tmp_path / f"{img.stem}.json").read_text())
    assert len(record["grounding"]) >= min(2, len(record["proposals"]))


def test_palette_has_no_fixed_limit():
    colours = demo.palette(40)
    assert len(set(colours)) == 40


def test_demo_bad_input_one_line(world_run, tmp_path, capsys):
    assert demo.main(["--start_from", world_run, "--demo_path", str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jpg" in err[0]
    assert demo.main(["--start_from", world_run, "--beam_sise", "2"]) == 2


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="../shared/data/coco-mini not present")
def test_demo_on_real_coco_mini_photos(tmp_path):
    from misc.session import train
    from test_coco_mini import mini_options
    from prepro import prepro_det, prepro_dic_coco
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
