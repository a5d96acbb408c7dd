"""Captions, image records and boxes as arrays (misc/captions.py, misc/annotations.py): the same
targets as the token-list encoding, caches that follow their inputs, read-only data folders."""
import copy
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from conftest import COCO_MINI, ROOT, needs_coco_mini, require_shared, world_options
from nbt.misc import npz_cache
from nbt.misc.annotations import BoxIndex
from nbt.misc.captions import CaptionStore
from nbt.misc.dataset import CaptionDataset, DataBundle
from nbt.misc.transforms import box_iou



def reference_targets(ds, row, props, gt, gt_cls, rng, gt_fine, gt_group) -> dict:
    """The loader's encoding before the caption store: token lists, the matcher run per item."""
    opt, vocab = ds.opt, ds.b.vocab
    caps = [c for c in ds.b.captions[row] if c] or [[]]
    S, L, R = opt.seq_per_img, opt.seq_length, len(props)
    if len(caps) >= S:
        chosen = rng.choice(len(caps), S, replace=False) if ds.train else np.arange(S)
    else:
        chosen = np.concatenate([np.arange(len(caps)), rng.choice(len(caps), S - len(caps))])
    present = set(int(c) for c in gt_cls)
    iou = box_iou(props[:, :4], gt) if R else np.zeros((0, len(gt)), np.float32)
    det_cls = props[:, 4].astype(np.int64) if R else np.zeros(0, np.int64)
    score_ok = props[:, 5] >= opt.pos_score_thresh if R else np.zeros(0, bool)
    attr_words, group_words = ds.b.boxes.attribute_words, ds.b.boxes.group_words

    def positives(c, fine, adjectives):
        boxes = gt_cls == c
        if (gt_fine[boxes] == fine).any():
            boxes = boxes & (gt_fine == fine)
        if adjectives:
            has = np.array([g >= 0 and adjectives <= group_words[g] for g in gt_group], bool)
            if (boxes & has).any():
                boxes = boxes & has
        hit = (iou[:, boxes] > opt.pos_iou_thresh).any(1) if R else np.zeros(0, bool)
        return hit & score_ok & (det_cls == c)
    out = {"words": np.zeros((S, L), np.int64), "vis_cls": np.zeros((S, L), np.int64),
           "plural": np.zeros((S, L), np.int64), "fine": np.full((S, L), -1, np.int64),
           "pos": np.zeros((S, L, R), bool)}
    for s, k in enumerate(chosen):
        tokens = caps[int(k)]
        visual = {v.pos: v for v in ds.b.matcher.match(tokens, present)} if ds.visual_slots else {}
        t = i = 0
        while i < len(tokens) and t < L:
            v = visual.get(i)
            if v is not None:
                adjectives, j = set(), i - 1
                while j >= 0 and tokens[j] in attr_words:
                    adjectives.add(tokens[j])
                    j -= 1
                mask = positives(v.cls, v.fine, adjectives)
                if mask.any():
                    out["words"][s, t] = vocab.encode(tokens[i + v.length - 1])
                    out["vis_cls"][s, t], out["plural"][s, t], out["fine"][s, t] = v.cls, v.plural, v.fine
                    out["pos"][s, t] = mask
                    t += 1
                    i += v.length
                    continue
            out["words"][s, t] = vocab.encode(tokens[i])
            t += 1
            i += 1
    return out


def compare_with_reference(ds, epochs=(0,)) -> int:
    """Encode every item of ds both ways; returns how many captions were matched live (a crop
    removed a class their cached match claimed)."""
    live = {"n": 0}
    encode, match = ds.encode_captions, ds._match

    def spy(row, props, gt, gt_cls, rng, gt_fine=None, gt_group=None, gt_entity=None):
        ref = reference_targets(ds, row, props, gt, gt_cls, copy.deepcopy(rng), gt_fine, gt_group)
        out = encode(row, props, gt, gt_cls, rng, gt_fine, gt_group, gt_entity)
        for k, v in ref.items():
            assert np.array_equal(out[k].numpy(), v), f"row {row}: {k} differs"
        return out

    def count(tokens, present):
        live["n"] += 1
        return match(tokens, present)
    ds.encode_captions, ds._match = spy, count
    for e in epochs:
        for i in range(len(ds)):
            ds[(i, e)]
    return live["n"]


def test_array_captions_give_the_targets_of_token_lists(world_dir):
    b = DataBundle.load(world_options(world_dir))
    assert isinstance(b.captions, CaptionStore) and b.captions.tokens.dtype == np.int32
    assert compare_with_reference(CaptionDataset(b, "train", train=True), epochs=(0, 1)) == 0
    compare_with_reference(CaptionDataset(b, "val", train=False))
    # a crop of half the image drops whole objects: those captions are matched again, live
    half = DataBundle.load(world_options(world_dir, image_size=128, image_crop_size=64))
    assert compare_with_reference(CaptionDataset(half, "train", train=True, max_images=60)) > 0


def test_baseline_targets_have_no_visual_words(world_dir):
    b = DataBundle.load(world_options(world_dir))
    ds = CaptionDataset(b, "train", train=True, max_images=30, visual_slots=False)
    compare_with_reference(ds)
    assert all((ds[(i, 0)]["vis_cls"] == 0).all() for i in range(5))


@needs_coco_mini
def test_real_captions_give_the_targets_of_token_lists(tmp_path):
    from nbt.prepro import prepro_det, prepro_dic_coco
    ann, classes = COCO_MINI / "annotations", ROOT / "data" / "coco" / "coco_class_name.txt"
    assert prepro_dic_coco.main([
        "--captions_json", str(ann / "captions_train2017.json"), str(ann / "captions_val2017.json"),
        "--class_name_file", str(classes), "--output_dic", str(tmp_path / "dic.json"),
        "--output_cap", str(tmp_path / "cap.json")]) == 0
    assert prepro_det.main(["--input_dic", str(tmp_path / "dic.json"), "--class_name_file", str(classes),
                            "--output_h5", str(tmp_path / "det.h5"),
                            "--from_json", str(COCO_MINI / "detections_fastestdet.json")]) == 0
    from nbt.misc.config import options_from_dict
    opt = options_from_dict(dict(
        dataset="coco", input_json=str(tmp_path / "cap.json"), input_dic=str(tmp_path / "dic.json"),
        image_path=str(COCO_MINI), proposal_h5=str(tmp_path / "det.h5"),
        instances_json=[str(ann / "instances_train2017.json"), str(ann / "instances_val2017.json")],
        class_name_file=str(classes), image_size=256, image_crop_size=128, num_workers=0,
        cnn_backend="tiny", pretrained_cnn=False, seq_length=20, det_oracle=True))
    ds = CaptionDataset(DataBundle.load(opt), "train", train=True)
    live = compare_with_reference(ds, epochs=(0, 1))
    print(f"\ncoco-mini: {live} captions matched live after a crop removed a class they mention")
    assert live > 0


@pytest.mark.parametrize("source", ["world", "coco-mini"])
def test_a_crop_that_keeps_the_claimed_classes_keeps_the_match(world_dir, source):
    """What the cached visual words rely on: matching against a subset P' of the image's classes P
    gives the match over P whenever P' still holds every class that match claimed. On the world's
    captions, and on real English (coco-mini: bigrams, plurals, unmatched words)."""
    rng = np.random.default_rng(0)
    if source == "world":
        b = DataBundle.load(world_options(world_dir))
        captions = [(b.matcher, b.boxes.present_classes(b.dic["images"].image_id(r)), c)
                    for r in range(len(b.captions)) for c in b.captions[r]]
    else:
        from nbt.misc.vocab import ClassNames, VisualWordMatcher
        from nbt.prepro.prepro_dic_coco import tokenize
        coco = ClassNames.read(ROOT / "data" / "coco" / "coco_class_name.txt")
        m = VisualWordMatcher(coco)
        captions = []
        for split in ("train2017", "val2017"):
            data = json.loads((require_shared(COCO_MINI) / "annotations" / f"captions_{split}.json").read_text())
            for a in data["annotations"]:
                tokens = tokenize(a["caption"])
                others = rng.integers(1, coco.num_classes + 1, 3).tolist()     # classes the caption may not name
                captions.append((m, {v.cls for v in m.match(tokens)} | set(others), tokens))
    checked = 0
    for matcher, P, tokens in captions:
        full = matcher.match(tokens, P)
        claimed = {v.cls for v in full}
        for _ in range(3):
            extra = {c for c in P - claimed if rng.random() < 0.5}
            assert matcher.match(tokens, claimed | extra) == full, " ".join(tokens)
            checked += 1
    assert checked > 1000


def test_store_and_image_table_give_back_the_json(world_dir):
    b = DataBundle.load(world_options(world_dir))
    caps = json.loads((world_dir / "cap_world.json").read_text())
    dic = json.loads((world_dir / "dic_world.json").read_text())
    assert [b.captions[r] for r in range(len(caps))] == caps
    assert list(b.dic["images"]) == [{k: im[k] for k in ("split", "file_path", "id")} for im in dic["images"]]
    assert b.rows("val") == [i for i, im in enumerate(dic["images"]) if im["split"] == "val"]


def _world_copy(world_dir, tmp_path):
    for name in ("cap_world.json", "dic_world.json", "world_class_name.txt", "world_detection.h5"):
        shutil.copy(world_dir / name, tmp_path / name)
    (tmp_path / "annotations").mkdir()
    shutil.copy(world_dir / "annotations" / "instances_world.json", tmp_path / "annotations")
    return world_options(tmp_path, image_path=str(world_dir / "images"))


def _same_bundle(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.captions.arrays().values(), b.captions.arrays().values())) \
        and all(np.array_equal(x, y) for x, y in zip(a.boxes.arrays().values(), b.boxes.arrays().values()))


def test_second_start_reads_the_caches_not_the_json(world_dir, tmp_path, monkeypatch):
    opt = _world_copy(world_dir, tmp_path)
    first = DataBundle.load(opt)
    assert (tmp_path / "dic_world.boxes.npz").is_file() and (tmp_path / "dic_world.captions.npz").is_file()

    def boom(*a, **k):
        raise AssertionError("parsed a json the cache holds")
    monkeypatch.setattr(BoxIndex, "from_files", boom)
    monkeypatch.setattr(CaptionStore, "build", boom)
    second = DataBundle.load(opt)
    assert _same_bundle(first, second)
    assert second.boxes.sizes == first.boxes.sizes and second.boxes.group_words == first.boxes.group_words
    ds = CaptionDataset(second, "train", train=True)
    ref = CaptionDataset(first, "train", train=True)
    assert all(torch.equal(ds[(i, 0)]["pos"], ref[(i, 0)]["pos"]) for i in range(10))


def test_caches_follow_their_inputs(world_dir, tmp_path):
    opt = _world_copy(world_dir, tmp_path)
    first = DataBundle.load(opt)
    path = tmp_path / "annotations" / "instances_world.json"
    inst = json.loads(path.read_text())
    a = inst["annotations"][0]
    a["bbox"] = [1.0, 2.0, 3.0, 4.0]
    path.write_text(json.dumps(inst))
    caps = json.loads((tmp_path / "cap_world.json").read_text())
    caps[0][0] = ["a", "brand", "new", "caption"]
    (tmp_path / "cap_world.json").write_text(json.dumps(caps))
    second = DataBundle.load(opt)
    boxes = second.boxes.get(a["image_id"])[0]
    assert [1.0, 2.0, 4.0, 6.0] in boxes.tolist() and [1.0, 2.0, 4.0, 6.0] not in first.boxes.get(a["image_id"])[0].tolist()
    assert second.captions[0][0] == ["a", "brand", "new", "caption"]
    (tmp_path / "dic_world.captions.npz").write_bytes(b"not a zip file")     # a damaged cache: rebuilt
    assert _same_bundle(DataBundle.load(opt), second)


def test_read_only_data_folder_loads_without_cache_and_one_warning(world_dir, tmp_path, monkeypatch):
    opt = _world_copy(world_dir, tmp_path)

    def read_only(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(npz_cache, "atomic_path", read_only)
    monkeypatch.setattr(npz_cache, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        b = DataBundle.load(opt)
        DataBundle.load(opt)
    mine = [w for w in caught if "cannot write the cache" in str(w.message)]
    assert len(mine) == 1 and "Permission denied" in str(mine[0].message)
    assert not list(tmp_path.glob("*.npz"))
    assert CaptionDataset(b, "train", train=True)[(0, 0)]["words"].any()


def test_malformed_caption_files_name_the_file_and_entry(world_dir, tmp_path):
    from nbt.misc.io import DataError
    opt = _world_copy(world_dir, tmp_path)
    path = tmp_path / "cap_world.json"
    caps = json.loads(path.read_text())
    path.write_text(json.dumps(caps[:5]))
    with pytest.raises(DataError, match=r"cap_world.json: expected a list of \d+ caption lists"):
        DataBundle.load(opt)
    caps[3] = "a ring"
    path.write_text(json.dumps(caps))
    with pytest.raises(DataError, match="cap_world.json: entry 3 is not a list of captions"):
        DataBundle.load(opt)
    dic = json.loads((tmp_path / "dic_world.json").read_text())
    del dic["images"][2]["file_path"]
    (tmp_path / "dic_world.json").write_text(json.dumps(dic))
    with pytest.raises(DataError, match="dic_world.json: every images"):
        DataBundle.load(opt)


def test_the_caption_cache_key_covers_the_matchers_sources():
    """A changed matcher (or the plural relation / number cues it uses) must invalidate the cache."""
    from nbt.misc.captions import matcher_sources
    from nbt.misc.language import language_for
    from nbt.misc.vocab import ClassNames
    classes = ClassNames(("dog",), (("dog", "puppy"),))
    english = {p.name for p in matcher_sources(language_for("en", classes).matcher)}
    chinese = {p.name for p in matcher_sources(language_for("zh", classes).matcher)}
    assert {"vocab.py", "plurals.py"} <= english and "chinese.py" in chinese
    assert all(p.is_file() and p.parent.name == "misc" for p in matcher_sources(language_for("en", classes).matcher))
