"""Shared fixtures: a small built-in world (generated once per test session) and tiny options."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import _checkout  # noqa: E402,F401  (`nbt` = this checkout)
# ../shared/data next to the checkout (or next to a folder above it: worktrees live one level deeper)
SHARED = next((p / "shared" / "data" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
              ROOT.parent / "shared" / "data")
COCO_MINI = SHARED / "coco-mini"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

from nbt.misc.config import options_from_dict  # noqa: E402
from nbt.prepro.prepare_world import prepare  # noqa: E402
from nbt.prepro.world import WorldConfig  # noqa: E402


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    prepare(WorldConfig(out=str(out), seed=7, n_images=160), quiet=True)
    return out


def world_options(root: Path, scheme: str = "", **overrides):
    sub = root / scheme if scheme else root
    values = dict(
        dataset="world", input_json=str(sub / "cap_world.json"), input_dic=str(sub / "dic_world.json"),
        image_path=str(root / "images"), proposal_h5=str(root / "world_detection.h5"),
        instances_json=[str(root / "annotations" / "instances_world.json")],
        class_name_file=str(root / "world_class_name.txt"), cnn_backend="tiny", pretrained_cnn=False,
        finetune_cnn=True, att_feat_size=32, rnn_size=48, input_encoding_size=24,
        att_hid_size=24, class_emb_size=16, loc_emb_size=16, image_size=72, image_crop_size=64,
        seq_length=16, batch_size=8, num_workers=0, cuda=False, learning_rate=3e-3, grad_clip=2.0,
        drop_prob_lm=0.0, max_epochs=1, val_every_epoch=0, disp_interval=0, checkpoint_path=str(root / "save"),
        cached_tokens=str(sub / "world-train-df.json"))
    values.update(overrides)
    return options_from_dict(values)


@pytest.fixture
def tiny_opt(world_dir):
    return world_options(world_dir)


@pytest.fixture(scope="session")
def world_run(world_dir):
    """A one-iteration (randomly initialised) world run, for the demo and the web page."""
    from nbt.misc.session import train
    opt = world_options(world_dir, id="demo_run", max_iters=1, eval_split="", region_grouping=True)
    return train(opt)["dir"]


@pytest.fixture(scope="session")
def world_zh_dir(tmp_path_factory) -> Path:
    """The same small world (seed 7, 160 images), captioned in Chinese."""
    out = tmp_path_factory.mktemp("world_zh")
    prepare(WorldConfig(out=str(out), seed=7, n_images=160, lang="zh"), quiet=True)
    return out


@pytest.fixture(scope="session")
def world_zh_run(world_zh_dir):
    """A one-iteration (randomly initialised) Chinese world run, for the API, the demo and the web page."""
    from nbt.misc.session import train
    opt = world_options(world_zh_dir, id="demo_run_zh", max_iters=1, eval_split="", region_grouping=True,
                        language="zh", seq_length=18)
    return train(opt)["dir"]
