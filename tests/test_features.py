"""Cached region features (prepro/prepro_features.py, misc/features.py): built once, then training
and evaluation without the CNN and RoIAlign, with the metrics of the image path."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import world_options
from nbt.misc.dataset import CaptionDataset, DataBundle, collate
from nbt.misc.io import DataError
from nbt.pooling.roi_align import pool_regions
from nbt.prepro.prepro_features import build_cache


def test_cached_features_train_and_match_the_cnn(world_dir, tmp_path):
    opt = world_options(world_dir, finetune_cnn=False)
    cache = build_cache(opt, tmp_path / "feats", batch_size=32)
    cached = dataclasses.replace(opt, cached_features=str(cache))
    b = DataBundle.load(cached)
    ds = CaptionDataset(b, "val", train=True)
    item = ds[(0, 0)]
    assert item["image"].shape == (32 + 8, 8, 8)                  # (D, h, w) conv map (+ colour skip), no image
    # the cached row equals the CNN applied to the eval-transformed image (float16 storage)
    from nbt.misc.backbone import build_backbone
    torch.manual_seed(opt.seed)
    net = build_backbone(opt).eval()
    raw = CaptionDataset(DataBundle.load(opt), "val", train=False)[(0, 0)]
    with torch.no_grad():
        ref = net(raw["image"][None])[0]
    assert torch.allclose(item["image"], ref, atol=2e-2, rtol=1e-2)
    assert torch.equal(item["proposals"], raw["proposals"])
    # ... and its pooled proposals are RoIAlign of that conv map at those proposals
    pooled = pool_regions(ref[None], raw["proposals"][None, :, :4], net.stride)[0]      # (R, D)
    assert item["regions"].shape == pooled.shape and torch.allclose(item["regions"], pooled, atol=2e-2, rtol=1e-2)
    batch = collate([ds[(i, 0)] for i in range(4)])
    R = batch["proposals"].shape[1]
    assert batch["region_feats"].shape == (4, R, 40)
    assert not batch["region_feats"][~batch["prop_mask"]].any()   # padding rows are zeros
    from nbt.misc.session import train
    run = train(dataclasses.replace(cached, id="cached", max_iters=3, eval_split=""))
    assert run["state"]["iteration"] == 3


def test_cache_size_per_image_is_as_documented(world_dir, tmp_path):
    opt = world_options(world_dir, finetune_cnn=False, max_proposal=30)
    cache = build_cache(opt, tmp_path / "feats", batch_size=64)
    meta = json.loads((cache / "meta.json").read_text())
    D, (h, w), R = meta["channels"], meta["grid"], meta["regions"]
    per_image = (cache / "features.npy").stat().st_size / meta["rows"]
    assert abs(per_image - 2 * D * (h * w + R)) < 1 and R == 30       # npy header spread over the rows
    assert (cache / "proposals.npy").stat().st_size / meta["rows"] == pytest.approx(24 * R, abs=1)


def test_cache_refuses_other_proposals_crop_sizes_and_old_layouts(world_dir, tmp_path):
    opt = world_options(world_dir, finetune_cnn=False)
    cache = build_cache(opt, tmp_path / "feats", batch_size=64)

    def item(**kw):
        o = dataclasses.replace(opt, cached_features=str(cache), **kw)
        return CaptionDataset(DataBundle.load(o), "train", train=True)[(0, 0)]
    assert "regions" in item()
    with pytest.raises(DataError, match="pooled at other proposals"):
        item(det_oracle=True)
    with pytest.raises(DataError, match="at 64 px.*96 px"):
        item(image_crop_size=96)
    old = tmp_path / "old"
    old.mkdir()
    np.save(old / "conv.npy", np.zeros((2, 4, 2, 2), np.float16))
    (old / "meta.json").write_text(json.dumps({"rows": 2, "shape": [4, 2, 2]}))
    with pytest.raises(DataError, match="older version"):
        CaptionDataset(DataBundle.load(dataclasses.replace(opt, cached_features=str(old))), "train", train=True)[(0, 0)]


def _train_and_evaluate(opt, epochs: int):
    from nbt.misc.runtime import seed_everything
    from nbt.misc.trainer import TrainState, evaluate, make_loader, train_one_epoch
    from nbt.misc.builders import build_model, build_optimizer
    bundle, cpu = DataBundle.load(opt), torch.device("cpu")
    seed_everything(opt.seed)
    model = build_model(opt, bundle, cpu)
    optimizer = build_optimizer(opt, model)
    ds = CaptionDataset(bundle, "train", train=True, max_images=opt.train_max_images)
    state = TrainState()
    losses = [train_one_epoch(model, optimizer, torch.amp.GradScaler("cuda", enabled=False),
                              make_loader(ds, opt, shuffle=True, epoch=e), opt, cpu, epoch=e, state=state)["loss"]
              for e in range(epochs)]
    result = evaluate(model, bundle, opt, cpu, "train", meteor=False, max_images=opt.train_max_images, progress=False)
    return model, losses, result


def _metrics(result) -> dict:
    return {**result["overall"], **(result.get("grounding") or {})}


def _said(result) -> list:
    """What the model said about each image: caption, tagged caption and grounded boxes."""
    return [(p["image_id"], p["caption"], p["tagged"], p["grounding"]) for p in result["predictions"]]


def test_training_from_cached_regions_gives_the_metrics_of_training_from_images(world_dir, tmp_path):
    """A frozen CNN (res18, random weights) and image_size == image_crop_size: the image path's
    crop is the whole image, so both paths see the same batches. GT boxes as proposals (world
    objects stay clear of the border; a detection crossing it is clipped by one pixel more in the
    image path's crop). A float32 cache gives the image path's training step by step (the same
    losses, then the same weights) and so the same captions and metrics; the float16 cache
    evaluates the same model to the same captions. Five steps: the equality is per step, so a few
    show it; what the model has learned by then does not matter (nor does it differ by CPU).
    Constrained beam search makes every caption point at (up to) two regions, so that captions, boxes
    and grounding are compared, not the empty captions of a model that has not learned to speak yet."""
    opt = world_options(world_dir, cnn_backend="res18", pretrained_cnn=False, finetune_cnn=False,
                        image_size=64, image_crop_size=64, det_oracle=True, seq_per_img=1, batch_size=20,
                        train_max_images=20, rnn_size=128, input_encoding_size=64, att_hid_size=64,
                        learning_rate=5e-3, beam_size=2, cbs=True, cbs_mode="all", cbs_tag_size=2)
    model, losses, result = _train_and_evaluate(opt, epochs=5)
    exact = build_cache(opt, tmp_path / "f32", batch_size=64, dtype=np.float32)
    cached_model, cached_losses, cached = _train_and_evaluate(dataclasses.replace(opt, cached_features=str(exact)),
                                                              epochs=5)
    print(f"\nimages: loss {losses[0]:.4f} -> {losses[-1]:.4f}, {_metrics(result)}"
          f"\ncached: loss {cached_losses[0]:.4f} -> {cached_losses[-1]:.4f}, {_metrics(cached)}")
    assert losses[-1] < losses[0]                                          # it trains
    assert np.allclose(cached_losses, losses, rtol=1e-4, atol=0)
    trained = {n: p for n, p in model.decoder.named_parameters()}
    for n, p in cached_model.decoder.named_parameters():
        assert torch.allclose(p, trained[n], rtol=1e-3, atol=1e-5), n
    assert _said(cached) == _said(result) and len(_said(result)) == 20
    assert all(grounding for *_, grounding in _said(result))          # CBS: each image's objects (1 or 2+)
    assert _metrics(cached) == pytest.approx(_metrics(result), abs=1e-9)
    from nbt.misc.trainer import evaluate
    half = build_cache(opt, tmp_path / "f16", batch_size=64)
    bundle = DataBundle.load(dataclasses.replace(opt, cached_features=str(half)))
    model.cached, backbone, model.backbone = True, model.backbone, None
    try:
        fp16 = evaluate(model, bundle, bundle.opt, torch.device("cpu"), "train", meteor=False,
                        max_images=opt.train_max_images, progress=False)
    finally:
        model.cached, model.backbone = False, backbone
    assert _said(fp16) == _said(result)
    assert _metrics(fp16) == pytest.approx(_metrics(result), abs=1e-9)


def test_features_that_overflow_float16_are_refused_not_written(world_dir, tmp_path, capsys):
    from nbt.prepro import prepro_features
    opt = world_options(world_dir, cnn_backend="res101", pretrained_cnn=False, finetune_cnn=False,
                        image_size=128, image_crop_size=128)
    with pytest.raises(DataError, match="do not fit float16"):          # random weights, no batch norm
        build_cache(opt, tmp_path / "f", batch_size=4)
    assert not list((tmp_path / "f").iterdir())
    assert prepro_features.main(["--dtype", "int8", "--out", str(tmp_path / "g")]) == 2
    assert prepro_features.main(["--path_opt", "cfgs/world.yml"]) == 2
    assert "--out <directory> is required" in capsys.readouterr().err
