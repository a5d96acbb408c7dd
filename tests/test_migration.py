"""A user of the original Neural Baby Talk brings its configs, commands and files; a newcomer walks
the COCO path on coco-mini. The original's cfgs are its real files (tests/fixtures/original_nbt/cfgs,
commit c351ae6); its n-gram pickle is written opcode for opcode as its prepro_ngrams.py wrote it
(Python 2 cPickle, protocol 2)."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import py2pickle
from conftest import COCO_MINI, ROOT, needs_coco_mini, world_options
from nbt.misc.config import ConfigError, build_options
from nbt.misc.io import DataError

ORIGINAL_CFGS = Path(__file__).parent / "fixtures" / "original_nbt" / "cfgs"
CLASSES = ROOT / "data" / "coco" / "coco_class_name.txt"


def run_in(cwd, *args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- the original's cfgs ------------------------------------------------------------------------------
def test_the_originals_coco_cfg_defaults_to_its_places_under_data_path():
    """Its normal_coco_res101.yml names no class-name or instances file and data_path 'data': the
    original's places under data_path, not the world's; --data_path moves them."""
    opt = build_options(["--path_opt", str(ORIGINAL_CFGS / "normal_coco_res101.yml")])
    assert opt.dataset == "coco" and opt.data_path == "data"
    assert opt.class_name_file == "data/coco/coco_class_name.txt"
    assert opt.instances_json == ["data/coco/annotations/instances_train2014.json",
                                  "data/coco/annotations/instances_val2014.json"]
    moved = build_options(["--path_opt", str(ORIGINAL_CFGS / "normal_coco_res101.yml"), "--data_path", "/d"])
    assert moved.class_name_file == "/d/coco/coco_class_name.txt"
    assert moved.instances_json[0] == "/d/coco/annotations/instances_train2014.json"
    assert moved.input_dic == "data/coco/dic_coco.json"                 # the cfg's own value still wins
    flickr = build_options(["--dataset", "flickr30k", "--data_path", "/d"])
    assert flickr.class_name_file == "/d/flickr30k/flickr30k_class_name.txt" and flickr.instances_json == []


@pytest.mark.parametrize("cfg,folder", [("normal_coco_res101", "save/normal_coco_1024_adam"),
                                        ("robust_coco", "save/robust_coco_1024")])
def test_the_originals_checkpoint_path_is_the_run_folder(cfg, folder):
    """The original wrote model.pth straight into its cfg's checkpoint_path; so does its cfg here,
    and evaluating with --start_from keeps that folder's name."""
    from nbt.misc.session import results_path, run_dir
    opt = build_options(["--path_opt", str(ORIGINAL_CFGS / f"{cfg}.yml")])
    assert run_dir(opt) == Path(folder)
    ev = build_options(["--path_opt", str(ORIGINAL_CFGS / f"{cfg}.yml"), "--start_from", folder])
    assert run_dir(ev) == Path(folder) and results_path(ev, "test").name == f"{Path(folder).name}_test_greedy.json"
    # with an id, the project's rule holds: <checkpoint_path>/<id>
    assert run_dir(build_options(["--path_opt", str(ORIGINAL_CFGS / f"{cfg}.yml"), "--id", "x"])) == \
        Path(folder) / "x"


@pytest.mark.parametrize("cfg", ["noc_coco_res101", "noc_coco_vgg16"])
def test_the_originals_absolute_paths_are_one_line_naming_file_and_option(cfg, tmp_path):
    with pytest.raises(ConfigError) as err:
        build_options(["--path_opt", str(ORIGINAL_CFGS / f"{cfg}.yml")])
    text = str(err.value)
    assert f"{cfg}.yml: input_json '/srv/share/jiasenlu/nbtv2/data/coco/cap_coco.json'" in text and "\n" not in text
    r = run_in(tmp_path, ROOT / "main.py", "--path_opt", ORIGINAL_CFGS / f"{cfg}.yml")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert r.returncode == 2 and len(errors) == 1 and "input_json" in errors[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "save").exists()
    with pytest.raises(ConfigError, match=f"{cfg}.yml: instances_json '/srv/share/jiasenlu/nbtv2/data/coco/"
                                          "annotations/instances_train2014.json' \\(under its data_path"):
        build_options(["--path_opt", str(ORIGINAL_CFGS / f"{cfg}.yml"), "--input_json", "a", "--input_dic", "b",
                       "--image_path", "c", "--proposal_h5", "d"])


# -- coco-mini laid out as the original's data/ --------------------------------------------------------
@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A working folder as data/README.md lays it out: data/coco-mini (the data set), prepro's
    outputs in data/coco_mini/ (cfgs/coco_mini_cpu.yml) and the same under the original's names in
    data/coco/ (its cfgs), with the images at data/coco/images."""
    work = tmp_path_factory.mktemp("newcomer")
    (work / "data" / "coco").mkdir(parents=True)
    (work / "data" / "coco-mini").symlink_to(COCO_MINI)
    (work / "data" / "coco" / "images").symlink_to(COCO_MINI)             # the original's cfgs' image_path
    shutil.copy(CLASSES, work / "data" / "coco" / "coco_class_name.txt")
    ann = "data/coco-mini/annotations"
    r = run_in(work, ROOT / "prepro" / "prepro_dic_coco.py", "--captions_json", f"{ann}/captions_train2017.json",
               f"{ann}/captions_val2017.json", "--class_name_file", "data/coco/coco_class_name.txt",
               "--word_count_threshold", "0", "--output_dic", "data/coco_mini/dic_coco_mini.json",
               "--output_cap", "data/coco_mini/cap_coco_mini.json",
               "--output_df", "data/coco_mini/coco_mini-train-df.json", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_in(work, ROOT / "prepro" / "prepro_det.py", "--input_dic", "data/coco_mini/dic_coco_mini.json",
               "--class_name_file", "data/coco/coco_class_name.txt", "--output_h5",
               "data/coco_mini/coco_mini_detection.h5", "--from_json", "data/coco-mini/detections_fastestdet.json")
    assert r.returncode == 0, r.stderr
    for ours, theirs in (("dic_coco_mini.json", "dic_coco.json"), ("cap_coco_mini.json", "cap_coco.json"),
                         ("coco_mini_detection.h5", "coco_detection.h5")):
        (work / "data" / "coco" / theirs).symlink_to(work / "data" / "coco_mini" / ours)
    return work


SMALL = ["--cnn_backend", "tiny", "--pretrained_cnn", "False", "--att_feat_size", "32", "--rnn_size", "48",
         "--input_encoding_size", "24", "--att_hid_size", "24", "--class_emb_size", "16", "--loc_emb_size", "16",
         "--image_size", "96", "--image_crop_size", "64", "--batch_size", "4", "--num_workers", "0",
         "--max_iters", "1", "--eval_split", "", "--cuda", "False"]


@needs_coco_mini
def test_the_originals_cfg_trains_on_coco_mini_into_its_checkpoint_path(newcomer):
    """The original's normal_coco_res101.yml, as shipped, on the original's data layout (coco-mini
    made by prepro from COCO 2017 captions, so its dic records the 2017 instances): no class-name
    or instances option, and model.pth lands in save/normal_coco_1024_adam."""
    dic = json.loads((newcomer / "data" / "coco_mini" / "dic_coco_mini.json").read_text())
    assert dic["instances_json"] == ["../coco-mini/annotations/instances_train2017.json",
                                     "../coco-mini/annotations/instances_val2017.json"]
    opt = build_options(["--path_opt", str(ORIGINAL_CFGS / "normal_coco_res101.yml"), "--input_dic",
                         str(newcomer / "data" / "coco" / "dic_coco.json")])
    assert opt.instances_json == [str(newcomer / "data" / "coco" / "../coco-mini/annotations/instances_train2017.json"),
                                  str(newcomer / "data" / "coco" / "../coco-mini/annotations/instances_val2017.json")]
    r = run_in(newcomer, ROOT / "main.py", "--path_opt", ORIGINAL_CFGS / "normal_coco_res101.yml", *SMALL)
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    assert (newcomer / "save" / "normal_coco_1024_adam" / "model.pth").is_file()
    assert not (newcomer / "save" / "normal_coco_1024_adam" / "normal_coco_res101").exists()


@needs_coco_mini
def test_an_explicit_instances_option_wins_over_the_dics_record(newcomer):
    dic = str(newcomer / "data" / "coco" / "dic_coco.json")
    opt = build_options(["--path_opt", str(ORIGINAL_CFGS / "normal_coco_res101.yml"), "--input_dic", dic,
                         "--instances_json", "a.json,b.json"])
    assert opt.instances_json == ["a.json", "b.json"]
    cfg = newcomer / "explicit.yml"
    cfg.write_text(f"dataset: coco\ninput_dic: {dic}\ninstances_json: [c.json]\n")
    assert build_options(["--path_opt", str(cfg)]).instances_json == ["c.json"]


@needs_coco_mini
def test_the_coco_mini_cpu_config_runs_one_iteration(newcomer):
    r = run_in(newcomer, ROOT / "main.py", "--path_opt", ROOT / "cfgs" / "coco_mini_cpu.yml", "--max_iters", "1",
               "--eval_split", "", "--num_workers", "0")
    assert r.returncode == 0, r.stdout[-1500:] + r.stderr[-1500:]
    ckpt = torch.load(newcomer / "save" / "coco_mini_cpu" / "model.pth", weights_only=True)
    assert ckpt["iteration"] == 1 and ckpt["config"]["instances_json"][0].endswith("instances_train2017.json")


@needs_coco_mini
def test_prepro_says_what_to_do_when_captions_would_be_mostly_unk(tmp_path, capsys):
    from nbt.prepro import prepro_dic_coco
    ann = COCO_MINI / "annotations"
    args = ["--captions_json", str(ann / "captions_train2017.json"), str(ann / "captions_val2017.json"),
            "--class_name_file", str(CLASSES), "--output_dic", str(tmp_path / "d.json"),
            "--output_cap", str(tmp_path / "c.json"), "--quiet"]
    assert prepro_dic_coco.main(args) == 0                                # the default threshold, 5
    out = capsys.readouterr().out
    share = re.search(r"note: (\d+\.\d) % of the training tokens are UNK", out)
    assert share and float(share.group(1)) > 25 and "lower --word_count_threshold" in out
    assert prepro_dic_coco.main(args + ["--word_count_threshold", "1"]) == 0
    assert "--word_count_threshold" not in capsys.readouterr().out          # 8.9 %: no advice


def test_prepro_accepts_the_originals_max_length(capsys):
    from nbt.prepro.prepro_dic_coco import build_parser, run
    args = build_parser().parse_args(["--input_json", "x.json", "--output_dic_json", "d", "--output_cap_json", "c",
                                      "--max_length", "16"])
    assert args.max_length == 16
    with pytest.raises(DataError, match="x.json"):                         # reaches the data, with a note
        run(args)
    assert "--max_length 16 has no effect" in capsys.readouterr().out


# -- evaluation through a config of another geometry -----------------------------------------------
def test_evaluating_through_a_cfg_of_another_size_keeps_the_runs_geometry(world_run, world_dir, tmp_path, capsys):
    """world_run was trained at 64 px; cfgs/world.yml says 128 and names data/world/... (absent
    here): the checkpoint's data and geometry win over the cfg, so every grounded box is one of the
    image's proposals in its own pixels (not x2). A command-line size wins, with a warning."""
    from nbt import main
    from nbt.misc.detector import ProposalReader
    os.chdir(tmp_path)
    try:
        args = ["--path_opt", str(ROOT / "cfgs" / "world.yml"), "--inference_only", "True", "--start_from",
                world_run, "--cbs", "True", "--cbs_mode", "all", "--cbs_tag_size", "1", "--beam_size", "2",
                "--eval_max_images", "6", "--cuda", "False", "--num_workers", "0"]
        assert main.main(args) == 0
        result = json.loads(next((tmp_path / "eval_results").glob("*.json")).read_text())
        dic = json.loads((world_dir / "dic_world.json").read_text())
        row = {im["id"]: i for i, im in enumerate(dic["images"])}
        reader = ProposalReader(world_dir / "world_detection.h5", [im["id"] for im in dic["images"]], 8)
        boxes = [(g["box"], reader.rows(row[p["image_id"]])[:, :4])
                 for p in result["imgToEval"] for g in p["grounding"]]
        assert len(boxes) >= 6
        for box, props in boxes:
            assert np.abs(props - np.array(box)).max(1).min() < 0.02, (box, props[:3])
        assert "warning" not in capsys.readouterr().err
        assert main.main(args + ["--image_crop_size", "128", "--image_size", "144", "--overwrite", "True"]) == 0
        err = capsys.readouterr().err
        assert "warning: --image_crop_size 128 differs from the run's training value 64; using 128" in err
    finally:
        os.chdir(ROOT)


# -- the original's n-gram pickle for SCST -------------------------------------------------------------
def originals_ngram_pickle(images: list[list[list[str]]], itow: dict[str, str]) -> dict:
    """What the original's prepro/prepro_ngrams.py computed for its -idxs file: every reference +
    '<eos>', unknown words as 'UNK', tokens as str(word id) ('<eos>' = 0), n = 1..4, one count per
    image; ref_len = the number of images."""
    wtoi = {w: i for i, w in itow.items()}
    wtoi["<eos>"] = 0
    df = defaultdict(float)
    for refs in images:
        grams = set()
        for tokens in refs:
            words = [str(wtoi[t if t in wtoi else "UNK"]) for t in tokens + ["<eos>"]]
            grams |= {tuple(words[i:i + k]) for k in range(1, 5) for i in range(len(words) - k + 1)}
        for g in grams:
            df[g] += 1
    return {"document_frequency": df, "ref_len": len(images)}


@pytest.fixture
def world_refs(world_dir):
    dic = json.loads((world_dir / "dic_world.json").read_text())
    cap = json.loads((world_dir / "cap_world.json").read_text())
    train = [caps for im, caps in zip(dic["images"], cap) if im["split"] == "train"]
    return dic["ix_to_word"], train


def test_the_originals_ngram_pickle_is_read_as_the_same_document_frequencies(world_refs, tmp_path):
    from nbt.misc.cider import document_frequency, read_document_frequency
    itow, train = world_refs
    path = tmp_path / "world-train-idxs.p"
    path.write_bytes(py2pickle.dumps(originals_ngram_pickle(train, itow)))
    assert pickle.loads(path.read_bytes(), encoding="latin1")["ref_len"] == len(train)   # a valid pickle
    ix_to_word = {int(k): w for k, w in itow.items()}
    got = read_document_frequency(str(path), ix_to_word, train)
    unked = [[[t if t in itow.values() else "UNK" for t in c] for c in refs] for refs in train]
    want = document_frequency([[" ".join(c) for c in refs] for refs in unked])
    assert got["ref_len"] == pytest.approx(want["ref_len"]) and got["df"] == want["df"]
    shuffled = dict(zip(itow, reversed(list(itow.values()))))             # made with another dic
    path.write_bytes(py2pickle.dumps(originals_ngram_pickle(train, shuffled)))
    with pytest.raises(DataError, match="made with another dic"):
        read_document_frequency(str(path), ix_to_word, train)


def test_scst_reads_the_original_cached_tokens_name_from_data(world_dir, world_refs, tmp_path, capsys):
    """cached_tokens: coco-train-idxs as the original's cfgs give it = data/<name>.p: SCST trains."""
    from nbt.misc.session import train
    itow, refs = world_refs
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "world-train-idxs.p").write_bytes(py2pickle.dumps(originals_ngram_pickle(refs, itow)))
    os.chdir(tmp_path)
    try:
        run = train(world_options(world_dir, id="scst_idxs", self_critical=True, cached_tokens="world-train-idxs",
                                  max_iters=1, eval_split="", train_sample_n=2))
    finally:
        os.chdir(ROOT)
    assert run["state"]["iteration"] == 1
    with pytest.raises(DataError, match="file not found: world-train-idxs .*data/world-train-idxs.p"):
        train(world_options(world_dir, id="scst_none", self_critical=True, cached_tokens="world-train-idxs",
                            max_iters=1, eval_split=""))


class _Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_asking_for_anything_else_is_refused_without_running(tmp_path):
    from nbt.misc.cider import read_document_frequency
    from nbt.misc.legacy_pickle import NGRAM_PICKLE_TYPES, load_legacy_pickle
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.p"
    bad.write_bytes(pickle.dumps({"document_frequency": _Boom(marker), "ref_len": 1}, protocol=2))
    with pytest.raises(DataError) as err:
        read_document_frequency(str(bad), {1: "a"})
    assert "refused" in str(err.value) and "system" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    with pytest.raises(DataError, match="refused.*__builtin__.eval"):
        load_legacy_pickle_bytes(tmp_path, b"\x80\x02c__builtin__\neval\nU\x041+1\x85R.", NGRAM_PICKLE_TYPES)
    with pytest.raises(DataError, match="not a readable pickle"):
        load_legacy_pickle_bytes(tmp_path, b"\x80\x02}(", NGRAM_PICKLE_TYPES)
    assert load_legacy_pickle(tmp_path / "x.p", NGRAM_PICKLE_TYPES) == {}


def load_legacy_pickle_bytes(tmp_path, data: bytes, allowed):
    from nbt.misc.legacy_pickle import load_legacy_pickle
    (tmp_path / "x.p").write_bytes(data)
    try:
        return load_legacy_pickle(tmp_path / "x.p", allowed)
    finally:
        (tmp_path / "x.p").write_bytes(b"\x80\x02}.")


# -- the original's demo options --------------------------------------------------------------------------
def test_the_originals_demo_options_are_accepted(world_run, world_dir, tmp_path, capsys):
    """--id (the run save/<id>), --load_best_score 0 (model.pth), --image_path (where the run's
    images are), --det_oracle (their GT boxes are the proposals), --cnn_backend / --data_path (a note)."""
    from nbt import demo
    from nbt.misc.annotations import BoxIndex
    from nbt.misc.vocab import ClassNames
    (tmp_path / "save").mkdir()
    shutil.copytree(world_run, tmp_path / "save" / "mine")
    (tmp_path / "save" / "mine" / "model-best.pth").write_bytes(b"")       # not read with --load_best_score 0
    moved = tmp_path / "pictures"
    shutil.copytree(world_dir / "images", moved)
    os.chdir(tmp_path)
    try:
        code = demo.main(["--id", "mine", "--load_best_score", "0", "--image_path", str(moved), "--det_oracle",
                          "True", "--cnn_backend", "res101", "--data_path", "data", "--demo_out", "out",
                          "--demo_max_images", "2"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "--cnn_backend res101 has no effect" in err and "--data_path has no effect" in err
        classes = ClassNames.read(world_dir / "world_class_name.txt")
        boxes = BoxIndex.from_files([world_dir / "annotations" / "instances_world.json"], classes)
        dic = json.loads((world_dir / "dic_world.json").read_text())
        for record in json.loads((tmp_path / "out" / "visu.json").read_text()):
            assert record["image"].startswith(str(moved))
            image_id = next(im["id"] for im in dic["images"] if record["image"].endswith(im["file_path"]))
            gt = boxes.get(image_id)[0]
            shown = np.array([p["box"] for p in record["proposals"]])
            assert len(shown) == len(gt) and np.allclose(np.sort(shown, 0), np.sort(gt, 0), atol=0.02)
            assert all(p["score"] == 1.0 for p in record["proposals"])
        assert demo.main(["--id", "mine", "--demo_out", "out2"]) == 2          # model-best.pth is read: empty
        assert "empty" in capsys.readouterr().err
    finally:
        os.chdir(ROOT)


# -- smaller ones ---------------------------------------------------------------------------------------
def test_a_dic_without_unk_loads_with_unk_appended(world_dir, tmp_path):
    """The original's prepro writes no UNK when no training word falls under the threshold."""
    from nbt.misc.dataset import load_dic
    dic = json.loads((world_dir / "dic_world.json").read_text())
    last = max(dic["ix_to_word"], key=int)
    assert dic["ix_to_word"][last] == "UNK"
    _, _, vocab = load_dic(str(world_dir / "dic_world.json"), str(world_dir / "world_class_name.txt"))
    del dic["ix_to_word"][last]
    (tmp_path / "dic.json").write_text(json.dumps(dic))
    _, _, no_unk = load_dic(str(tmp_path / "dic.json"), str(world_dir / "world_class_name.txt"))
    assert no_unk.fingerprint() == vocab.fingerprint() and no_unk.encode("zeppelin") == int(last) == no_unk.size - 1


def test_att2in2_decoder_shapes_and_one_step_matches_teacher_forcing():
    from nbt.misc.baselines import Att2in2
    from nbt.misc.decoder_base import CaptionDecoder
    torch.manual_seed(0)
    dec = Att2in2(vocab_size=11, num_classes=3, fine_class=[1, 1, 2, 3], feat_dim=8, rnn_size=16,
                  input_encoding_size=6, att_hid_size=5, class_emb_size=4, loc_emb_size=4, drop_prob=0.0,
                  stride=8, image_size=64).eval()
    conv = torch.randn(2, 8, 8, 8)                                          # (B, D, h, w)
    props = torch.tensor([[[0, 0, 30, 30, 1, .9], [10, 5, 60, 40, 2, .8], [0, 0, 0, 0, 0, 0]],
                          [[5, 5, 20, 50, 3, .7], [1, 1, 63, 63, 1, .6], [2, 30, 40, 60, 2, .5]]])
    mask = props[..., 5] > 0
    f = dec.encode(conv, props, mask)
    words = torch.tensor([[[3, 5, 0, 0]], [[7, 2, 4, 0]]])                  # (B, S=1, L)
    vis = torch.tensor([[[0, 1, 0, 0]], [[0, 0, 2, 0]]])
    out = dec(f, {"words": words, "vis_cls": vis})
    assert out["word_logp"].shape == (2, 4, 11) and out["region_logp"].shape == (2, 4, 3)   # BOS + 3 tokens: all ended
    total = out["word_logp"].exp().sum(-1) + out["region_logp"].exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)        # one softmax over words and regions
    assert out["region_logp"][0, :, 2].max() < -1e3                         # padding is never pointed at
    per_step = CaptionDecoder.forward(dec, f, {"words": words, "vis_cls": vis})   # the step-by-step reference
    assert torch.allclose(per_step["word_logp"], out["word_logp"], atol=1e-5)
    assert torch.allclose(per_step["region_logp"], out["region_logp"], atol=1e-5)


def test_att2in2_trains_one_iteration_and_grounds_at_evaluation(world_dir, tmp_path):
    from nbt.misc.session import inference, train
    opt = world_options(world_dir, att_model="att2in2", id="att2in2", max_iters=1, eval_split="")
    run = train(opt)
    os.chdir(tmp_path)
    try:
        result = inference(world_options(world_dir, att_model="att2in2", start_from=run["dir"], eval_max_images=4,
                                         beam_size=2, cbs=True, cbs_mode="all", cbs_tag_size=1))
    finally:
        os.chdir(ROOT)
    assert result["n_images"] == 4 and sum(len(p["grounding"]) for p in result["predictions"]) >= 4
    from nbt.misc.dataset import CaptionDataset, DataBundle
    assert CaptionDataset(DataBundle.load(opt), "train", train=True).visual_slots      # trained with its slots


@needs_coco_mini
def test_prepro_det_imports_the_originals_detection_json(tmp_path):
    """Per image {image_id, num_boxes, detection: [{location x1 y1 x2 y2, label 1..C, score}]} (its
    prepro_det.py copied location and label into the h5, whose loader read the first num_boxes):
    coco-mini's FastestDet detections written that way give the h5 of their own format; a label
    0 (background) is dropped with a warning; num_boxes cuts."""
    from nbt.prepro import prepro_det, prepro_dic_coco
    from nbt.misc.vocab import ClassNames
    ann = COCO_MINI / "annotations"
    assert prepro_dic_coco.main(["--captions_json", str(ann / "captions_train2017.json"),
                                 str(ann / "captions_val2017.json"), "--class_name_file", str(CLASSES),
                                 "--output_dic", str(tmp_path / "d.json"), "--output_cap", str(tmp_path / "c.json"),
                                 "--quiet"]) == 0
    names = ClassNames.read(CLASSES).names
    ours = json.loads((COCO_MINI / "detections_fastestdet.json").read_text())
    theirs = [{"image_id": e["image_id"], "num_boxes": len(e["detections"]),
               "detection": [{"location": d["bbox_xyxy"], "label": names.index(d["category_name"]) + 1,
                              "score": d["score"]} for d in e["detections"]]} for e in ours]
    half = len(theirs) // 2
    (tmp_path / "train.json").write_text(json.dumps(theirs[:half]))
    (tmp_path / "val.json").write_text(json.dumps(theirs[half:]))
    common = ["--input_dic", str(tmp_path / "d.json"), "--class_name_file", str(CLASSES)]
    assert prepro_det.main(common + ["--output_h5", str(tmp_path / "a.h5"), "--from_json",
                                     str(COCO_MINI / "detections_fastestdet.json")]) == 0
    assert prepro_det.main(common + ["--output_h5", str(tmp_path / "b.h5"), "--from_json",
                                     str(tmp_path / "train.json"), str(tmp_path / "val.json")]) == 0
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("dets_labels", "dets_num", "image_id"):
            assert np.array_equal(a[key][:], b[key][:]), key
        n0 = int(b["dets_num"][0])
    first = theirs[0]
    first["num_boxes"] = 3
    first["detection"][0]["label"] = 0
    (tmp_path / "cut.json").write_text(json.dumps(theirs))
    with pytest.warns(UserWarning, match="dropped 1 unusable"):
        assert prepro_det.main(common + ["--output_h5", str(tmp_path / "c.h5"), "--from_json",
                                         str(tmp_path / "cut.json")]) == 0
    with h5py.File(tmp_path / "c.h5") as c:
        assert n0 > 3 and int(c["dets_num"][0]) == 2


# -- the grounding table and epoch numbering ---------------------------------------------------------
def test_the_grounding_table_shows_counts_and_the_rows_without_words():
    from nbt.misc.evaluation import CaptionEvaluator
    from nbt.misc.trainer import format_table
    ev = CaptionEvaluator(bundle=None)
    ev.grounding.update(words=1, correct=1, plural_words=1, plural_correct=1)
    text = format_table({"overall": {"CIDEr": 0.5}, "grounding": ev.grounding_report()})
    assert text.split("grounding_accuracy")[1].splitlines()[0].strip() == "100.0  (1 of 1 words)"
    assert "-  (0 of 0 words)" in text.split("fine_grained_accuracy")[1].splitlines()[0]
    ev.reset()
    empty = format_table({"overall": {"CIDEr": 0.5}, "grounding": ev.grounding_report()})
    for row in ("visual_words", "grounding_accuracy", "plural_accuracy"):
        assert row in empty, row
    assert "-  (0 of 0 words)" in empty.split("grounding_accuracy")[1].splitlines()[0]


def test_epoch_checkpoints_are_numbered_as_the_log_and_old_names_still_resume(world_dir, capsys):
    from nbt.misc.session import train
    base = dict(train_max_images=8, eval_split="", keep_epoch_checkpoints=-1)
    run = Path(train(world_options(world_dir, id="numbered", max_epochs=2, **base))["dir"])
    out = capsys.readouterr().out
    assert "epoch 0:" in out and "epoch 1:" in out
    assert sorted(p.name for p in run.glob("epoch_*.pth")) == ["epoch_0.pth", "epoch_1.pth"]
    assert torch.load(run / "epoch_1.pth", weights_only=True)["epoch"] == 2
    resumed = train(world_options(world_dir, id="numbered", resume_epoch=0, max_epochs=2, **base))
    assert resumed["state"]["epoch"] == 2 and "epoch 1:" in capsys.readouterr().out
    old = world_dir / "save" / "old_names"                                    # an earlier version's run
    old.mkdir()
    shutil.copy(run / "epoch_0.pth", old / "epoch_1.pth")                    # it named files by epochs done
    assert train(world_options(world_dir, id="old_names", resume_epoch=0, max_epochs=2, **base))["state"]["epoch"] == 2
    assert "holds the end of epoch 0" in capsys.readouterr().out
    with pytest.raises(DataError, match="no checkpoint of the end of epoch 5.*holds epochs 1$"):
        train(world_options(world_dir, id="old_names", resume_epoch=5, max_epochs=7, **base))
