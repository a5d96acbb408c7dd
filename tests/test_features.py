"""Cached conv features: built once, then training and evaluation without the CNN."""
import dataclasses

import torch

from conftest import world_options
from misc.dataset import CaptionDataset, DataBundle
from prepro.prepro_features import build_cache


def test_cached_features_train_and_match_the_cnn(world_dir, tmp_path):
    opt = world_options(world_dir, finetune_cnn=False)
    cache = build_cache(opt, tmp_path / "feats", batch_size=32)
    cached = dataclasses.replace(opt, cached_features=str(cache))
    b = DataBundle.load(cached)
    ds = CaptionDataset(b, "val", train=True)
    item = ds[(0, 0)]
    assert item["image"].shape == (32 + 8, 8, 8)                  # (D, h, w) conv map (+ colour skip), no image
    # the cached row equals the CNN applied to the eval-transformed image (float16 storage)
    from misc.backbone import build_backbone
    torch.manual_seed(opt.seed)
    net = build_backbone(opt).eval()
    raw = CaptionDataset(DataBundle.load(opt), "val", train=False)[(0, 0)]
    with torch.no_grad():
        ref = net(raw["image"][None])[0]
    assert torch.allclose(item["image"], ref, atol=2e-2, rtol=1e-2)
    assert torch.equal(item["proposals"], raw["proposals"])
    from misc.session import train
    run = train(dataclasses.replace(cached, id="cached", max_iters=3, eval_split=""))
    assert run["state"]["iteration"] == 3
