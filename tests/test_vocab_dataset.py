"""Vocabulary, visual-word matching, grounding targets and robustness of the loader."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from nbt.misc.dataset import CaptionDataset, DataBundle, EpochBatchSampler, collate
from nbt.misc.io import DataError
from nbt.misc.transforms import load_image
from nbt.misc.vocab import ClassNames, VisualWordMatcher, build_vocab


@pytest.fixture
def coco_like_classes(tmp_path):
    p = tmp_path / "classes.txt"
    p.write_text("person, man, woman, boy\ndog, puppy, beagle\nhot dog\ntennis racket, racket\n"
                 "sheep, ewe, cattle\ncow, cattle , bull\n")
    return p


def test_class_file_quirks_and_duplicates(coco_like_classes, capsys):
    classes = ClassNames.read(coco_like_classes)
    assert classes.names[:4] == ("person", "dog", "hot dog", "tennis racket")
    assert classes.word_to_class()["cattle"] == 6          # the last line keeps it, as in the original
    assert "bull" in classes.words[5] and "cattle" not in classes.words[4]
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: classes.txt: 1 word listed under more than one class, resolved as the original did "
        "(the last line wins; a class's own name stays with its class): cattle\u2192cow"]


def test_matcher_bigrams_before_unigrams_and_plurals(coco_like_classes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classes = ClassNames.read(coco_like_classes)
    m = VisualWordMatcher(classes)
    found = m.match("two dogs eat a hot dog near a man".split())
    assert [(v.surface, v.cls, v.plural) for v in found] == [("dogs", 2, 1), ("hot dog", 3, 0), ("man", 1, 0)]
    assert classes.fine_words[found[0].fine] == "dog"
    puppies = m.match("three puppies".split())[0]
    assert puppies.cls == 2 and puppies.plural == 1 and classes.fine_words[puppies.fine] == "puppy"
    assert m.match("a dog".split(), present={1}) == []          # class not among the GT boxes
    assert classes.forms.singular("rackets") == "racket"


def test_vocab_is_deterministic_and_counts_threshold():
    caps = [["a", "dog"], ["a", "cat"], ["a", "dog"], ["the", "dog"]]
    v = build_vocab(caps, threshold=1)
    assert v == {"1": "a", "2": "dog", "3": "UNK"}


def test_targets_ground_visual_words(tiny_opt):
    b = DataBundle.load(tiny_opt)
    ds = CaptionDataset(b, "train", train=True)
    items = [ds[(i, 0)] for i in range(len(ds))]
    batch = collate(items)
    vis = batch["vis_cls"] > 0
    assert vis.any()
    pos = batch["pos"][vis]                                     # every visual token has a positive
    assert pos.any(-1).all()
    # positives are proposals of the word's class
    b_idx, s_idx, t_idx = vis.nonzero(as_tuple=True)
    for b_, s_, t_ in list(zip(b_idx, s_idx, t_idx))[:50]:
        cls = batch["vis_cls"][b_, s_, t_]
        props = batch["proposals"][b_][batch["pos"][b_, s_, t_]]
        assert (props[:, 4] == cls).all() and (props[:, 5] >= 0.5).all()
    rate = batch["n_grounded"] / batch["n_visual"]
    print(f"\nworld: {batch['n_grounded']}/{batch['n_visual']} visual words with a positive proposal ({rate:.3f})")
    assert rate > 0.8


def test_oracle_grounds_every_visual_word(world_dir):
    from conftest import world_options
    b = DataBundle.load(world_options(world_dir, det_oracle=True))
    ds = CaptionDataset(b, "train", train=False)
    batch = collate([ds[(i, 0)] for i in range(40)])
    assert batch["n_grounded"] == batch["n_visual"]


def test_positives_follow_the_attributes_a_phrase_names(world_dir):
    """ "two red [rings]": only red rings are positives, even when the image has a blue ring too."""
    from conftest import world_options
    b = DataBundle.load(world_options(world_dir, det_oracle=True))
    ds = CaptionDataset(b, "train", train=False)
    colours = {"red", "green", "blue", "yellow", "purple", "orange"}
    checked = narrowed = 0
    for i in range(len(ds)):
        it = ds[(i, 0)]
        gt = it["gt"].numpy()                                   # oracle: proposal r is GT box r
        for s_, t_ in (it["vis_cls"] > 0).nonzero().tolist():
            before = b.vocab.ix_to_word.get(int(it["words"][s_, t_ - 1])) if t_ else None
            if before not in colours:
                continue
            pos = it["pos"][s_, t_].numpy()
            same_kind = (gt[:, 4] == int(it["vis_cls"][s_, t_])) & (gt[:, 5] == int(it["fine"][s_, t_]))
            assert pos.any() and all(before in b.boxes.group_words[int(g)] for g in gt[pos, 6])
            checked += 1
            narrowed += int(pos.sum() < (same_kind[:len(pos)]).sum())
    assert checked > 50 and narrowed > 0


def test_same_batch_for_same_seed_epoch_index(tiny_opt):
    b = DataBundle.load(tiny_opt)
    ds = CaptionDataset(b, "train", train=True)
    a, c = ds[(3, 1)], ds[(3, 1)]
    assert torch.equal(a["image"], c["image"]) and torch.equal(a["words"], c["words"])
    assert not torch.equal(ds[(3, 2)]["image"], a["image"])       # another epoch, another crop


def test_sampler_shuffles_each_epoch_and_resumes():
    s0 = list(EpochBatchSampler(20, 4, shuffle=True, seed=1, epoch=0))
    s1 = list(EpochBatchSampler(20, 4, shuffle=True, seed=1, epoch=1))
    assert s0 != s1 and len(s0) == 5
    resumed = list(EpochBatchSampler(20, 4, shuffle=True, seed=1, epoch=0, start_batch=2))
    assert resumed == s0[2:]
    r0 = list(EpochBatchSampler(20, 4, shuffle=True, seed=1, world_size=2, rank=0))
    r1 = list(EpochBatchSampler(20, 4, shuffle=True, seed=1, world_size=2, rank=1))
    assert sorted(i for b in r0 + r1 for i, _ in b) == list(range(20))


def test_fewer_captions_than_seq_per_img(tiny_opt):
    b = DataBundle.load(tiny_opt)
    row = b.rows("train")[0]
    b.captions[row] = b.captions[row][:2]
    ds = CaptionDataset(b, "train", train=True)
    item = ds[(0, 0)]
    assert item["words"].shape[0] == tiny_opt.seq_per_img and (item["words"][:, 0] > 0).all()


def test_image_modes_and_corrupt_files(tmp_path):
    Image.new("L", (20, 10), 128).save(tmp_path / "gray.png")
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(tmp_path / "rgba.png")
    Image.fromarray((np.arange(200, dtype=np.uint16).reshape(10, 20) * 300)).save(tmp_path / "deep.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for name in ("gray.png", "rgba.png", "deep.png"):
        im = load_image(tmp_path / name)
        assert im.mode == "RGB" and im.size == (20, 10)
    with pytest.warns(UserWarning, match="bad.jpg"):
        assert load_image(tmp_path / "bad.jpg") is None


def test_corrupt_image_is_skipped_and_listed(world_dir, tmp_path):
    from conftest import world_options
    import shutil
    shutil.copytree(world_dir / "images", tmp_path / "images")
    opt = world_options(world_dir, image_path=str(tmp_path / "images"))
    b = DataBundle.load(opt)
    ds = CaptionDataset(b, "train", train=True)
    victim = tmp_path / "images" / b.dic["images"][ds.rows[1]]["file_path"]
    victim.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        batch = collate([ds[(i, 0)] for i in range(4)])
    assert batch["images"].shape[0] == 3 and batch["skipped"] == [str(victim)]


def test_malformed_inputs_name_the_file(world_dir, tmp_path):
    from conftest import world_options
    bad = tmp_path / "dic.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="dic.json"):
        DataBundle.load(world_options(world_dir, input_dic=str(bad)))
    h5 = tmp_path / "d.h5"
    h5.write_bytes(b"nope")
    with pytest.raises(DataError, match="d.h5"):             # at load, before any training
        DataBundle.load(world_options(world_dir, proposal_h5=str(h5)))


def test_zero_detections_fall_back_to_words(world_dir, tmp_path):
    import h5py
    from conftest import world_options
    from nbt.misc.detector import write_h5
    ids = [im["id"] for im in json.loads((world_dir / "dic_world.json").read_text())["images"]]
    write_h5(tmp_path / "empty.h5", [np.zeros((0, 6), np.float32)] * len(ids), image_ids=ids)
    ds = CaptionDataset(DataBundle.load(world_options(world_dir, proposal_h5=str(tmp_path / "empty.h5"))),
                        "train", train=True)
    batch = collate([ds[(i, 0)] for i in range(6)])
    assert batch["proposals"].shape[1] == 1 and not batch["prop_mask"].any()
    assert batch["n_grounded"] == 0 and (batch["vis_cls"] == 0).all()   # everything falls back to words
    with h5py.File(tmp_path / "empty.h5") as f:
        assert f["dets_labels"].shape == (len(ids), 100, 6) and list(f["image_id"][:]) == ids
