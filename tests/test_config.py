import subprocess
import sys

import pytest

from conftest import ROOT
from nbt.misc.config import ConfigError, build_options, parse_bool


def test_command_line_overrides_yaml(tmp_path):
    cfg = tmp_path / "c.yml"
    cfg.write_text("batch_size: 7\ncuda: True\nlearning_rate: 0.1\n")
    opt = build_options(["--path_opt", str(cfg), "--batch_size", "3", "--cuda", "False"])
    assert opt.batch_size == 3 and opt.cuda is False and opt.learning_rate == 0.1


@pytest.mark.parametrize("text,value", [("True", True), ("false", False), ("1", True), ("no", False)])
def test_booleans_parse(text, value):
    assert parse_bool(text, "cuda") is value


def test_bad_boolean_is_an_error():
    with pytest.raises(ConfigError, match="cuda"):
        build_options(["--cuda", "maybe"])


def test_unknown_key_names_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean '--batch_size'"):
        build_options(["--batch_sise", "3"])
    cfg = tmp_path / "c.yml"
    cfg.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        build_options(["--path_opt", str(cfg)])


def test_unambiguous_prefix_is_the_option_as_in_argparse():
    assert build_options(["--max_epoch", "3"]).max_epochs == 3


def test_ambiguous_prefix_names_the_candidates():
    with pytest.raises(ConfigError, match="learning_rate_decay_start.*learning_rate_decay_every"):
        build_options(["--learning_rate_decay", "3"])


def test_shipped_configs_load():
    for cfg in sorted((ROOT / "cfgs").glob("*.yml")):
        opt = build_options(["--path_opt", str(cfg)])
        assert opt.path_opt == str(cfg)


@pytest.mark.parametrize("args,needle", [
    (["--batch_sise", "3"], "batch_size"),
    (["--cuda", "perhaps"], "cuda"),
    (["--path_opt", "cfgs/nope.yml"], "nope.yml"),
])
def test_main_bad_config_one_line_nonzero(args, needle):
    r = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l]
    assert len(lines) == 1 and needle in lines[0], r.stderr
