"""The real-data pipeline on ../shared/data/coco-mini (real COCO 2017 images, captions, instances,
FastestDet detections): prepro, detection import, loader, grounding rates, split regeneration."""
import json

import h5py
import pytest

from conftest import COCO_MINI, ROOT, needs_coco_mini
from nbt.misc.config import options_from_dict
from nbt.misc.dataset import CaptionDataset, DataBundle, collate
from nbt.misc.vocab import ClassNames, VisualWordMatcher
from nbt.prepro import prepro_det, prepro_dic_coco

pytestmark = needs_coco_mini
CLASSES = ROOT / "data" / "coco" / "coco_class_name.txt"
ANN = COCO_MINI / "annotations"


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    out = tmp_path_factory.mktemp("coco_mini")
    assert prepro_dic_coco.main([
        "--captions_json", str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json"),
        "--class_name_file", str(CLASSES), "--output_dic", str(out / "dic.json"),
        "--output_cap", str(out / "cap.json"), "--word_count_threshold", "1",
        "--output_df", str(out / "df.json")]) == 0
    assert prepro_det.main(["--input_dic", str(out / "dic.json"), "--class_name_file", str(CLASSES),
                            "--output_h5", str(out / "det.h5"),
                            "--from_json", str(COCO_MINI / "detections_fastestdet.json")]) == 0
    return out


def mini_options(out, **kw):
    values = dict(dataset="coco", input_json=str(out / "cap.json"), input_dic=str(out / "dic.json"),
                  image_path=str(COCO_MINI), proposal_h5=str(out / "det.h5"),
                  instances_json=[str(ANN / "instances_train2017.json"), str(ANN / "instances_val2017.json")],
                  class_name_file=str(CLASSES), image_size=144, image_crop_size=128, num_workers=0,
                  cnn_backend="tiny", pretrained_cnn=False, seq_length=20)
    values.update(kw)
    return options_from_dict(values)


def test_prepro_outputs_load_in_the_original_format(mini):
    dic = json.loads((mini / "dic.json").read_text())
    cap = json.loads((mini / "cap.json").read_text())
    assert len(dic["images"]) == 159 and len(cap) == 159
    assert {"ix_to_word", "wtod", "wtol", "images"} <= set(dic)
    assert dic["ix_to_word"]["1"] == "a" and dic["wtod"]["puppy"] == dic["wtod"]["dog"] == 16
    assert dic["images"][0]["file_path"].startswith("train2017/")
    assert {im["split"] for im in dic["images"]} == {"train", "val", "test"}
    df = json.loads((mini / "df.json").read_text())
    assert df["df"]["a"] > 10 and df["ref_len"] > 0


def test_real_captions_give_expected_visual_words():
    classes = ClassNames.read(CLASSES)
    m = VisualWordMatcher(classes)
    dogs = m.match("two dogs play with a frisbee".split())
    assert [(v.surface, classes.names[v.cls - 1], v.plural) for v in dogs] == \
        [("dogs", "dog", 1), ("frisbee", "frisbee", 0)]
    man = m.match("a man riding a wave on top of a surfboard".split())
    assert [classes.names[v.cls - 1] for v in man] == ["person", "surfboard"]
    assert classes.fine_words[man[0].fine] == "man"
    hot = m.match("a hot dog with mustard".split())
    assert [(v.surface, classes.names[v.cls - 1]) for v in hot] == [("hot dog", "hot dog")]
    caps = json.loads((ANN / "captions_train2017.json").read_text())["annotations"]
    found = [v for c in caps for v in m.match(prepro_dic_coco.tokenize(c["caption"]))]
    assert sum(v.plural for v in found) > 20 and len({v.cls for v in found}) > 40


def test_imported_detections_and_grounding_rates(mini):
    with h5py.File(mini / "det.h5") as f:
        assert f["dets_labels"].shape == (159, 100, 6)
        n = f["dets_num"][:]
        assert 23 <= n.min() and n.max() == 100
    rates = {}
    for oracle in (False, True):
        b = DataBundle.load(mini_options(mini, det_oracle=oracle))
        ds = CaptionDataset(b, "train", train=False)
        batch = collate([ds[(i, 0)] for i in range(len(ds))])
        rates[oracle] = batch["n_grounded"] / batch["n_visual"]
        print(f"\n{'oracle' if oracle else 'FastestDet'}: {batch['n_grounded']} of {batch['n_visual']} visual words")
        assert batch["images"].shape[-1] == 128
    print(f"coco-mini visual words with a positive proposal: oracle {rates[True]:.3f}, "
          f"FastestDet {rates[False]:.3f}")
    # fixed files, so fixed rates: every visual word has its GT box; the small detector gives 198 of
    # 564 a positive (measured). +-0.005 is under 3 words: pointer positives at IoU 0.6 instead of
    # 0.5 give 192, so a change here must be explained, and the number updated with it.
    assert rates[True] == 1.0 and rates[False] == pytest.approx(198 / 564, abs=0.005)


def test_split_regeneration_on_coco_mini(mini, tmp_path):
    for scheme in ("robust", "noc"):
        args = ["--captions_json", str(ANN / "captions_train2017.json"), str(ANN / "captions_val2017.json"),
                "--class_name_file", str(CLASSES), "--output_dic", str(tmp_path / f"{scheme}.json"),
                "--output_cap", str(tmp_path / f"{scheme}_cap.json"), "--split", scheme,
                "--split_file", str(tmp_path / f"split_{scheme}.json"), "--word_count_threshold", "1",
                "--instances_json", str(ANN / "instances_train2017.json"), str(ANN / "instances_val2017.json"),
                "--robust_max_test", "30", "--held_out", "dog,pizza"]
        assert prepro_dic_coco.main(args) == 0
        split = json.loads((tmp_path / f"split_{scheme}.json").read_text())
        dic = json.loads((tmp_path / f"{scheme}.json").read_text())
        if scheme == "noc":
            assert split["held_out"] == ["dog", "pizza"] and split["val"] and split["test"]
            assert "puppy" not in dic["ix_to_word"].values() and "pizza" not in dic["ix_to_word"].values()
        else:
            assert split["test_pairs"] and split["test_id"] and dic["split_scheme"] == "robust"


def test_bad_inputs_fail_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    assert prepro_dic_coco.main(["--input_json", str(bad), "--class_name_file", str(CLASSES),
                                 "--output_dic", str(tmp_path / "d.json"), "--output_cap", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0]
    assert not (tmp_path / "d.json").exists()
