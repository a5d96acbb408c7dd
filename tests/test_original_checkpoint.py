"""A model trained with the original NeuralBabyTalk loads here and computes its outputs.

tests/fixtures/original_model holds what the original's own model code (c351ae6, run on current
PyTorch: see the README there) wrote and computed for a small random model: its model-best.pth and
infos_fixture-best.pkl, two images, its proposals and captions, and its outputs. The converted
model must give the same teacher-forced log-probabilities (within 1e-5) and the same greedy and
beam-3 captions, pointer, plural and fine-grained choices included."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import COCO_MINI, ROOT, needs_coco_mini, require_module
from nbt.misc.captioner import build_captioner
from nbt.misc.checkpoint import checkpoint_vocabulary, load_checkpoint
from nbt.misc.config import options_from_dict
from nbt.misc.decoding import beam_search, greedy
from nbt.misc.io import DataError
from nbt.misc.transforms import to_tensor
from nbt.pooling.roi_align import corner_samples

FIXTURE = ROOT / "tests" / "fixtures" / "original_model"
TOL = 1e-5


@pytest.fixture(scope="module")
def expected():
    return torch.load(FIXTURE / "expected.pt", weights_only=True)


@pytest.fixture(scope="module")
def ckpt():
    return load_checkpoint(FIXTURE)


def build(ckpt):
    opt = options_from_dict(ckpt["config"])
    _, classes, vocab = checkpoint_vocabulary(ckpt)
    model = build_captioner(opt, vocab_size=vocab.size, num_classes=classes.num_classes,
                            fine_class=classes.fine_class())
    model.load_state_dict(ckpt["model"])
    return model.eval(), opt, vocab


@pytest.fixture(scope="module")
def converted(ckpt):
    return build(ckpt)


def fixture_batch(expected):
    images = torch.stack([to_tensor(Image.open(FIXTURE / f"image_{i}.png").convert("RGB")) for i in range(2)])
    R = expected["proposals"].shape[1]
    mask = torch.arange(R)[None] < expected["num"][:, 1:2]                        # (B, R)
    return {"images": images, "proposals": expected["proposals"], "prop_mask": mask}


@torch.no_grad()
def teacher_gaps(model, vocab, expected, order) -> dict[str, float]:
    """Largest |ours - original| of the teacher-forced word, region, plural and fine-grained
    log-probabilities (regions: the real proposals; fine-grained: the words the class allows)."""
    batch = fixture_batch(expected)
    f = model.encode(batch)
    V = vocab.size
    tokens = expected["seq"][:, :, 1:, 0]                                        # (B, 5, L) V + c = visual
    words = torch.where(tokens > V, torch.zeros_like(tokens), tokens)
    vis = torch.where(tokens > V, tokens - V, torch.zeros_like(tokens))
    out = model.decoder(f, {"words": words, "vis_cls": vis})
    t = expected["teacher"]
    T = t["word_logp"].shape[1]
    assert out["word_logp"].shape[1] == T
    valid = batch["prop_mask"].repeat_interleave(5, 0)[:, None, :].expand(-1, T, -1)       # (N, T, R)
    gaps = {"word": (out["word_logp"] - t["word_logp"][..., :V]).abs().max(),
            "region": (out["region_logp"] - t["region_logp"])[valid].abs().max()}
    # slot heads: the original averaged the positive regions of each visual target (roi_labels)
    labels = t["roi_labels"]                                                     # (N, T, R)
    feat = labels @ f.expand(5).regions / labels.sum(2, keepdim=True).clamp(min=1)   # (N, T, H)
    at = t["fg_idx"] > 0                                                          # visual targets
    plural, fine = model.decoder.slot_logp(out["h_lang"][at], feat[at], t["fg_idx"][at])
    theirs = t["fg_logp"][at][:, torch.tensor(order)]                             # (n, F) in our order
    allowed = torch.isfinite(fine)
    gaps["plural"] = (plural - t["bn_logp"][at]).abs().max()
    gaps["fine"] = (fine[allowed] - theirs[allowed]).abs().max()
    assert at.sum() >= 10 and allowed.sum() > at.sum(), "the fixture has visual targets with several words"
    return {k: float(v) for k, v in gaps.items()}


def original_order(ckpt) -> list[int]:
    """For each of our fine-grained indices, the original's (ckpt['vocabulary'] keeps the mapping)."""
    return ckpt["vocabulary"]["original_fine_index"]


def test_the_pair_is_converted_on_load_with_a_one_line_notice(capsys):
    ckpt = load_checkpoint(FIXTURE)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model of the original NeuralBabyTalk" in err[0] and "infos_fixture-best.pkl" in err[0]
    opt = ckpt["config"]
    assert (opt["roi_align"], opt["sentinel_cell"], opt["sentinel_key"], opt["fine_head"], opt["cnn_backend"]) == \
        ("original", "previous", "own", "glove", "res101_caffe")
    assert opt["extra_word_logit"] and not opt["pretrained_cnn"]
    assert "optimizer" not in ckpt and ckpt["classes"] == ["person", "bicycle", "car", "dog", "chair", "cup"]


def test_teacher_forced_log_probs_are_the_originals(ckpt, converted, expected):
    model, _, vocab = converted
    gaps = teacher_gaps(model, vocab, expected, original_order(ckpt))
    assert max(gaps.values()) <= TOL, gaps


def decode_as_original(decoded, V: int, order: list[int]) -> list[tuple]:
    """Our Decoded -> the original's encoding: tokens (pointer r = V + 1 + r), plural, fine (1..F)."""
    out = []
    for d in decoded:
        toks = [t if t < V else t + 1 for t in d.tokens]
        out.append((toks, [p if t >= V else 0 for t, p in zip(d.tokens, d.plural)],
                    [order[x] if t >= V else 0 for t, x in zip(d.tokens, d.fine)]))
    return out


def original_captions(expected, name: str) -> list[tuple]:
    rows = []
    for seq, bn, fg in zip(*(expected[name][k].tolist() for k in ("seq", "bn", "fg"))):
        n = seq.index(0) if 0 in seq else len(seq)
        rows.append((seq[:n], bn[:n], fg[:n]))
    return rows


def test_greedy_and_beam_captions_are_the_originals(ckpt, converted, expected):
    model, opt, vocab = converted
    order = original_order(ckpt)
    with torch.no_grad():
        f = model.encode(fixture_batch(expected))
        ours_greedy = greedy(model.decoder, f, max_len=opt.seq_length)
        ours_beam = beam_search(model.decoder, f, beam_size=3, max_len=opt.seq_length, first_finished=True)
        best_beam = beam_search(model.decoder, f, beam_size=3, max_len=opt.seq_length)
    assert decode_as_original(ours_greedy, vocab.size, order) == original_captions(expected, "greedy")
    assert decode_as_original(ours_beam, vocab.size, order) == original_captions(expected, "beam3")
    pointers = [t for toks, _, _ in original_captions(expected, "greedy") for t in toks if t > vocab.size]
    words = [t for toks, _, _ in original_captions(expected, "greedy") for t in toks if 0 < t < vocab.size]
    assert pointers and words, "the fixture's greedy captions point and speak"
    # the original's beam returned the first caption to end; by default ours returns the best one
    assert all(b.score >= q.score - 1e-6 for b, q in zip(best_beam, ours_beam))


# -- a wrong mapping is caught ------------------------------------------------------------------
SWAPS = [  # pairs of same-shaped tensors of the converted checkpoint
    ("decoder.att_grid.key_proj.weight", "decoder.att_region.key_proj.weight"),       # ctx2att <-> ctx2pool
    ("decoder.att_grid.query_proj.weight", "decoder.pointer.query_proj.weight"),      # h2att <-> h_fc1
    ("decoder.gate_h.weight", "decoder.sentinel.0.weight"),                           # h2h_2 <-> f_fc1
    ("decoder.regions.grid.0.weight", "decoder.regions.fc.0.weight"),                 # att_embed <-> fc_embed
    ("decoder.heads.plural.0.weight", "decoder.heads.fine.0.weight"),                 # bn_fc.0 <-> fg_fc.0
    ("decoder.sentinel_key.bias", "decoder.att_region.key_proj.bias"),                # f_fc2 <-> ctx2pool
    ("backbone.body.3.1.conv2.weight", "backbone.body.3.2.conv2.weight"),             # two ResNet blocks
    ("backbone.body.3.5.bn2.weight", "backbone.body.3.5.bn2.bias"),                   # a BatchNorm's scale / shift
]


@pytest.mark.parametrize("a, b", SWAPS)
def test_a_tensor_mapped_to_the_wrong_place_breaks_the_match(ckpt, expected, a, b):
    state = dict(ckpt["model"])
    assert state[a].shape == state[b].shape and not torch.equal(state[a], state[b])
    state[a], state[b] = state[b], state[a]
    model, _, vocab = build({**ckpt, "model": state})
    gaps = teacher_gaps(model, vocab, expected, original_order(ckpt))
    assert max(gaps.values()) > 100 * TOL, gaps


# -- RoIAlign: the original's sampling, bitwise -------------------------------------------------
def test_original_roi_align_sampling_is_bitwise_its_c_kernel():
    """roi_align_c_kernel.pt: the original's ROIAlignForwardCpu (compiled alone with gcc) on random
    maps and boxes, edges and boxes past the map included."""
    cases = torch.load(FIXTURE / "roi_align_c_kernel.pt", weights_only=True)
    extrapolated = 0
    for case in cases:
        ours = corner_samples(case["conv"], case["rois"], case["spatial_scale"])
        assert torch.equal(ours.view(torch.int32), case["samples"].view(torch.int32))
        H = case["conv"].shape[2]
        y = case["rois"][:, 2] * case["spatial_scale"]
        extrapolated += int(((y >= H - 1) & (y < H)).sum())
    assert sum(int((c["samples"] != 0).sum()) for c in cases) > 1000 and extrapolated > 0


# -- the infos pickle is read without running it ---------------------------------------------------
class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def evil_storage(marker) -> bytes:
    """A nested torch.save blob, as the infos' tensors have, whose pickle would run code."""
    return pickle.dumps(RunsCode(marker), protocol=2)


class EvilTensor:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (StorageBytes(evil_storage(self.marker)), 0, (1,), (1,), False, None))


class StorageBytes:
    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


@pytest.mark.parametrize("payload", ["opt", "storage"])
def test_a_malicious_infos_pickle_is_refused_without_running_it(tmp_path, payload, capsys):
    marker = tmp_path / "ran"
    shutil.copy(FIXTURE / "model-best.pth", tmp_path / "model-best.pth")
    import argparse
    evil = RunsCode(marker) if payload == "opt" else argparse.Namespace(fg_mask=EvilTensor(marker))
    with open(tmp_path / "infos_evil-best.pkl", "wb") as f:
        pickle.dump({"opt": evil, "vocab": {}}, f, protocol=2)
    with pytest.raises(DataError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "infos_evil-best.pkl" in message and "refused" in message
    assert ("system" in message) if payload == "opt" else ("storage" in message)
    assert not marker.exists()
    from nbt import demo
    capsys.readouterr()
    assert demo.main(["--start_from", str(tmp_path), "--demo_path", str(FIXTURE / "image_0.png"),
                      "--demo_out", str(tmp_path / "out")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not marker.exists()
    assert not (tmp_path / "out").exists()


def test_the_infos_of_a_python2_protocol_0_pickle_read_too(tmp_path):
    """Python 2's pickle.dump default (protocol 0: copy_reg._reconstructor, STRING opcodes)."""
    from nbt.misc.original_infos import read_infos
    protocol2 = read_infos(FIXTURE / "infos_fixture-best.pkl")
    protocol0 = read_infos(FIXTURE / "python2_protocol0" / "infos_fixture-best.pkl")
    a, b = vars(protocol2["opt"]), vars(protocol0["opt"])
    assert a.keys() == b.keys() and len(a) >= 70
    for key in a:
        assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key], key
    assert protocol0["opt"].fg_mask.dtype == torch.uint8 and protocol0["vocab"]["1"] == "a"


# -- the API, the demo, the web page, main.py and the converter command ------------------------------
def expected_greedy_text(ckpt, expected, vocab, i: int) -> tuple[str, list[list[float]]]:
    """The original's greedy caption of fixture image i, rendered by this project (tagged), and
    the boxes it pointed at."""
    V, order = vocab.size, original_order(ckpt)
    fine_words = vocab.classes.fine_words
    words, boxes = [], []
    for t, b, f in zip(*original_captions(expected, "greedy")[i]):
        if t < V:
            words.append(vocab.word(t))
            continue
        w = fine_words[order.index(f)]
        words.append(f"[{vocab.plural(w) if b else w}]")
        boxes.append([round(float(v), 2) for v in expected["proposals"][i, t - V - 1, :4]])
    return " ".join(words), boxes


def fixture_rows(expected, i: int) -> np.ndarray:
    return expected["proposals"][i, :int(expected["num"][i, 1])].numpy()


def test_the_api_captions_the_fixture_images_as_the_original(ckpt, expected, capsys):
    from nbt.misc.api import NBTCaptioner
    cap = NBTCaptioner.from_pretrained(FIXTURE)
    assert "converted on load" in capsys.readouterr().err
    images = [FIXTURE / f"image_{i}.png" for i in range(2)]
    results = cap.generate(images, [fixture_rows(expected, i) for i in range(2)])
    for i, r in enumerate(results):
        tagged, boxes = expected_greedy_text(ckpt, expected, cap.vocab, i)
        assert r.tagged == tagged and [g["box"] for g in r.grounding] == boxes
    assert any(r.grounding for r in results)


@needs_coco_mini
def test_demo_captions_coco_mini_photos_with_the_original_model_and_draws_the_boxes(tmp_path, capsys):
    from nbt import demo
    photos = sorted((COCO_MINI / "val2017-unlabeled").glob("*.jpg"))[:2]
    entries = []
    for k, p in enumerate(photos):                    # boxes of the fixture's classes, as a detector gives
        w, h = Image.open(p).size
        dets = [{"bbox_xyxy": [0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], "category_name": "person", "score": 0.9},
                {"bbox_xyxy": [0.5 * w, 0.4 * h, 0.95 * w, 0.8 * h], "category_name": "dog", "score": 0.7},
                {"bbox_xyxy": [0.05 * w, 0.05 * h, 0.3 * w, 0.3 * h], "category_name": "car", "score": 0.6},
                {"bbox_xyxy": [0.6 * w, 0.05 * h, 0.9 * w, 0.35 * h], "category_name": "chair", "score": 0.55}]
        entries.append({"image_id": k, "file_name": p.name, "width": w, "height": h, "detections": dets})
    (tmp_path / "dets.json").write_text(json.dumps(entries))
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photos:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "visu"
    assert demo.main(["--start_from", str(FIXTURE), "--demo_path", str(folder), "--demo_out", str(out),
                      "--demo_detections", str(tmp_path / "dets.json")]) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.err.splitlines() if "converted on load" in line]) == 1
    for p in photos:
        record = json.loads((out / f"{p.stem}.json").read_text())
        assert len(record["proposals"]) == 4
        picture = np.asarray(Image.open(out / f"{p.stem}.jpg"))
        assert picture.shape[1] == Image.open(p).size[0] and picture.shape[0] > Image.open(p).size[1]
    grounded = [g for p in photos for g in json.loads((out / f"{p.stem}.json").read_text())["grounding"]]
    assert grounded and all(g["class"] in ("person", "dog", "car", "chair") for g in grounded)


class FixedDetector:
    """A stand-in for the Faster R-CNN: the fixture's proposals for every picture."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, images):
        return [self.rows for _ in images]


def test_the_web_page_captions_with_the_original_model(ckpt, expected):
    require_module("gradio")
    from nbt.misc.api import NBTCaptioner
    from nbt.tools import web_demo
    cap = NBTCaptioner.from_pretrained(FIXTURE)
    cap._detector = FixedDetector(fixture_rows(expected, 1))
    picture, segments, table, result = web_demo.WebCaptioner(cap).page(str(FIXTURE / "image_1.png"), 1, False,
                                                                        "all", 3)
    tagged, boxes = expected_greedy_text(ckpt, expected, cap.vocab, 1)
    assert result["tagged"] == tagged and [g["box"] for g in result["grounding"]] == boxes
    assert result["source"] == "detector" and [row[0] for row in table] == [g["word"] for g in result["grounding"]]


def test_the_converter_command_writes_a_run_that_captions_the_same(ckpt, expected, tmp_path, capsys):
    from nbt.misc.api import NBTCaptioner
    from nbt.misc.vocab import ClassNames
    from nbt.tools import convert_original
    out = tmp_path / "converted"
    assert convert_original.main([str(FIXTURE), str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model-best.pth", "config.yml", "class_name.txt"}
    assert ClassNames.read(out / "class_name.txt").words == tuple(tuple(w) for w in ckpt["vocabulary"]["class_words"])
    capsys.readouterr()
    cap = NBTCaptioner.from_pretrained(out)
    assert "converted" not in capsys.readouterr().err                 # a checkpoint of ours now
    [r] = cap.generate([FIXTURE / "image_0.png"], [fixture_rows(expected, 0)])
    assert r.tagged == expected_greedy_text(ckpt, expected, cap.vocab, 0)[0]
    assert convert_original.main([str(FIXTURE), str(out)]) == 2       # not over a run without --overwrite


def test_main_resumes_the_original_model_only_into_a_new_run(world_dir, tmp_path, capsys):
    """Training from the original's folder must not write into it (--id names the new run); with
    data of another vocabulary the checkpoint is refused in one line."""
    from nbt import main as main_py
    src = tmp_path / "original"
    shutil.copytree(FIXTURE, src)
    before = sorted(p.name for p in src.iterdir())
    common = ["--path_opt", "", "--dataset", "world", "--input_json", str(world_dir / "cap_world.json"),
              "--input_dic", str(world_dir / "dic_world.json"), "--image_path", str(world_dir / "images"),
              "--proposal_h5", str(world_dir / "world_detection.h5"),
              "--class_name_file", str(world_dir / "world_class_name.txt"),
              "--instances_json", str(world_dir / "annotations" / "instances_world.json"),
              "--checkpoint_path", str(tmp_path / "save"), "--max_iters", "1", "--cuda", "False",
              "--num_workers", "0", "--start_from", str(src)]
    capsys.readouterr()
    assert main_py.main(common) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--id" in err[-1] and "original" in err[-1]
    assert main_py.main(common + ["--id", "finetuned"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "another class list" in err[-1] or "vocabulary" in err[-1]
    assert sorted(p.name for p in src.iterdir()) == before and not (tmp_path / "save" / "finetuned").exists()


# -- the original's beam search: the first caption to end ------------------------------------------
class ScriptedDecoder:
    """A decoder whose next-word log-probabilities depend on the previous token only (no regions):
    after BOS, 'a' (1) or 'b' (2); 'b' ends at once, 'a' goes on to 'c' (3), which ends. With two
    beams, "b" ends first (at step 1, log-prob -1.21) and "a c" later with a better score (-0.75)."""
    vocab_size, has_pointer = 4, False
    TABLE = torch.tensor([[np.log(0.2), np.log(0.5), np.log(0.3), -30.0],    # after BOS
                          [-3.0, -30.0, -30.0, -0.05],                        # after a
                          [-0.01, -30.0, -30.0, -5.0],                        # after b
                          [-0.01, -30.0, -30.0, -30.0]])                      # after c

    def init_state(self, f):
        from nbt.misc.baselines import LSTMState
        z = torch.zeros(f.batch, 1)
        return LSTMState(z, z)

    def step(self, tokens, f, state, pointed=None, img=None):
        return self.TABLE[tokens].float(), torch.zeros(len(tokens), 0), state


def test_beam_first_finished_returns_the_first_caption_to_end_as_the_original():
    from nbt.misc.encoded import ImageFeature
    f = ImageFeature(image=torch.zeros(1, 1))
    decoder = ScriptedDecoder()
    [best] = beam_search(decoder, f, beam_size=2, max_len=5)
    [first] = beam_search(decoder, f, beam_size=2, max_len=5, first_finished=True)
    assert best.tokens == [1, 3] and first.tokens == [2]
    assert first.score == pytest.approx(np.log(0.3) - 0.01, abs=1e-6) and first.score < best.score
    [cut] = beam_search(decoder, f, beam_size=2, max_len=1, first_finished=True)   # out of length: the best then
    assert cut.tokens == [1]
    with pytest.raises(ValueError, match="not with cbs"):
        beam_search(decoder, f, beam_size=2, max_len=5, first_finished=True, constraints=torch.zeros(1, 1).long())


def test_main_evaluates_the_original_model_on_data_of_its_vocabulary(ckpt, expected, tmp_path, monkeypatch, capsys):
    """`main.py --inference_only True --start_from <the original's folder>` with a data set in its
    vocabulary and classes (the converter's class_name.txt) and its image size and caption length
    (as its config gives them): the original's greedy captions."""
    import h5py
    from nbt import main as main_py
    from nbt.tools import convert_original
    assert convert_original.main([str(FIXTURE), str(tmp_path / "converted")]) == 0
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    images = []
    for i in range(2):
        shutil.copy(FIXTURE / f"image_{i}.png", data / "images" / f"im{i}.png")
        images.append({"split": "test", "file_path": f"im{i}.png", "id": 100 + i})
    voc = ckpt["vocabulary"]
    (data / "dic.json").write_text(json.dumps({"ix_to_word": voc["ix_to_word"], "images": images}))
    (data / "cap.json").write_text(json.dumps([[["a", "man", "on", "the", "street"]] * 5] * 2))
    R = expected["proposals"].shape[1]
    with h5py.File(data / "det.h5", "w") as h:
        h["dets_labels"] = expected["proposals"].numpy()
        h["dets_num"] = h["nms_num"] = expected["num"][:, 1].numpy()
        h["image_id"] = np.array([100, 101])
    assert R == 7
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main_py.main(["--path_opt", "", "--dataset", "coco", "--input_json", str(data / "cap.json"),
                         "--input_dic", str(data / "dic.json"), "--image_path", str(data / "images"),
                         "--proposal_h5", str(data / "det.h5"), "--instances_json", "",
                         "--class_name_file", str(tmp_path / "converted" / "class_name.txt"),
                         "--start_from", str(FIXTURE), "--inference_only", "True", "--cuda", "False",
                         "--num_workers", "0", "--cbs_score_thresh", "0.8", "--pos_score_thresh", "0.5",
                         "--image_crop_size", "256", "--image_size", "288", "--seq_length", "16"]) == 0
    assert "converted on load" in capsys.readouterr().err
    result = json.loads((tmp_path / "eval_results" / "original_model_test_greedy.json").read_text())
    _, _, vocab = checkpoint_vocabulary(ckpt)
    tagged = {p["image_id"]: p["tagged"] for p in result["imgToEval"]}
    assert tagged == {100 + i: expected_greedy_text(ckpt, expected, vocab, i)[0] for i in range(2)}
