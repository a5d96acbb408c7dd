"""Shared fixtures: a small built-in world (generated once per test session) and tiny options;
`require`, the one place where a test meets something missing from the machine."""
from __future__ import annotations

import importlib
import os
import shutil
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
CAPTION_METRICS = SHARED / "caption-metrics"

# -- what a test needs from outside the checkout ------------------------------------------------
# Some tests need things a fresh clone may lack: ../shared/data (real COCO images, published metric
# values), Java (METEOR, the PTB tokenizer), Chromium + chromedriver (the web page in a browser) and
# the test extras (Gradio). Every such test asks `require(...)` (or one of the require_* helpers
# below), never pytest.skip / skipif / importorskip directly:
#   - with CI=true a missing requirement is an ERROR: CI installs everything (make test: java,
#     browser, the [test] extra, ../shared next to the checkout) and must run every test;
#   - elsewhere it is a SKIP whose reason names what is missing and how to get it (shown by -ra).
# pytest_sessionfinish below also fails a CI=true run that skipped anything by other means.
CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(ok: bool, what: str, how: str) -> None:
    """Go on when `ok`; else fail (CI=true) or skip, saying `what` is missing and `how` to get it."""
    if ok:
        return
    if CI:
        pytest.fail(f"{what} is missing ({how}); with CI=true every test must run", pytrace=False)
    pytest.skip(f"{what} is missing: {how}", allow_module_level=True)


def require_shared(path: Path) -> Path:
    """A folder of ../shared/data (real data the repository may not redistribute)."""
    require(path.is_dir(), f"{path}", "put the project's shared/data folder next to the checkout")
    return path


def require_java() -> None:
    require(shutil.which("java") is not None, "Java (METEOR, PTB tokenizer)", "make java")


def require_chromium() -> tuple[str, str]:
    """(browser, driver) executables for Selenium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    require(bool(browser and driver), "Chromium and chromedriver",
            "make browser (apt-get install chromium chromium-driver)")
    return browser, driver


def require_module(name: str, how: str = 'pip install -e ".[test]"'):
    """An importable module of the test extras (Gradio, Selenium): the module."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    require(False, f"the Python module {name}", how)


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    """../shared/data/coco-mini (session scope: checked before any module fixture that reads it)."""
    return require_shared(COCO_MINI)


@pytest.fixture(scope="session")
def caption_metrics() -> Path:
    """../shared/data/caption-metrics: nlg-eval's hypothesis / reference files and their scores."""
    return require_shared(CAPTION_METRICS)


needs_coco_mini = pytest.mark.usefixtures("coco_mini")


def _skipped(config) -> int:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return len(reporter.stats.get("skipped", [])) if reporter else 0


def pytest_sessionfinish(session, exitstatus):
    """CI=true: a skip from anywhere (not only from require) fails the run."""
    if CI and _skipped(session.config) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if CI and _skipped(config):
        terminalreporter.write_line(f"CI=true: {_skipped(config)} test(s) skipped, so the run fails: CI must "
                                    "run every test", red=True)


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


@pytest.fixture(scope="session")
def reference_run(world_dir) -> Path:
    """One uninterrupted `main.py` run that every killed or signalled, then resumed run is compared
    with, bit for bit (test_train, test_runs): one shared run instead of one per test."""
    from test_train import cli, resumable_options, run_main
    p = run_main(cli(resumable_options(world_dir), id="reference"))
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out
    return world_dir / "save" / "reference"
