"""The command line as the original's users type it: its README commands verbatim, its dead
options, prefixes, wrong choices and out-of-range values caught before any data is read, and a
--help that describes every option with the defaults of the config it would run."""
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT
from nbt.misc.config import DEAD_OPTIONS, ConfigError, Options, build_options, format_help, help_defaults

# Every main.py command line of the original project's README (github.com/jiasenlu/NeuralBabyTalk),
# verbatim, including its flags that our parser must accept unchanged.
ORIGINAL_README = [
    "--path_opt cfgs/normal_coco_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30",
    "--path_opt cfgs/normal_coco_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30 "
    "--inference_only True --beam_size 3 --start_from save/coco_nbt_1024",
    "--path_opt cfgs/normal_flickr_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30",
    "--path_opt cfgs/normal_flickr_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30 "
    "--inference_only True --beam_size 3 --start_from save/flickr30k_nbt_1024",
    "--path_opt cfgs/robust_coco.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30",
    "--path_opt cfgs/robust_coco.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30 "
    "--inference_only True --beam_size 3 --start_from save/robust_coco_nbt_1024",
    "--path_opt cfgs/noc_coco_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30",
    "--path_opt cfgs/noc_coco_res101.yml --batch_size 20 --cuda True --num_workers 20 --max_epoch 30 "
    "--inference_only True --beam_size 3 --start_from save/noc_coco_nbt_1024",
    "--path_opt cfgs/noc_coco_res101.yml --cbs True --cbs_tag_size 3 --cbs_mode novel --inference_only True "
    "--start_from save/noc_coco_nbt_1024",
    "--path_opt cfgs/normal_coco_res101.yml --mGPUs True --batch_size 100",
    "--inference_only True --beam_size 3",
]


def _expected(line: str) -> dict:
    """What each option of an original README line must parse to (the line read by hand)."""
    want = {}
    if "--max_epoch " in line:
        want.update(max_epochs=30, batch_size=20, num_workers=20, cuda=True)
    if "--inference_only True" in line:
        want.update(inference_only=True)
    if "--beam_size 3" in line:
        want.update(beam_size=3)
    if "--start_from " in line:
        want.update(start_from=line.split("--start_from ")[1].split()[0])
    if "--cbs True" in line:
        want.update(cbs=True, cbs_tag_size=3, cbs_mode="novel")
    if "--mGPUs True" in line:
        want.update(mGPUs=True, batch_size=100)
    if "--path_opt " in line:
        want.update(dataset="flickr30k" if "flickr" in line else "coco")
    return want


@pytest.mark.parametrize("line", ORIGINAL_README)
def test_every_command_of_the_original_readme_parses(line):
    opt = build_options(shlex.split(line), default_cfg=str(ROOT / "cfgs" / "world.yml"))
    want = _expected(line)
    assert len(want) >= 2, line                                     # every line says something to check
    assert {k: getattr(opt, k) for k in want} == want


def test_original_readme_command_fails_only_on_missing_data(tmp_path):
    """From a folder without COCO: one line about the missing file, exit 2, no option error."""
    args = shlex.split(ORIGINAL_README[0])
    args[1] = str(ROOT / args[1])
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "not found" in errors[0] and "option" not in errors[0], r.stderr
    assert not (tmp_path / "save").exists()


def test_every_config_name_of_the_original_exists():
    for name in ("normal_coco_res101", "normal_flickr_res101", "robust_coco", "noc_coco_res101", "noc_coco_vgg16"):
        assert build_options(["--path_opt", str(ROOT / "cfgs" / f"{name}.yml")]).dataset in ("coco", "flickr30k")


@pytest.mark.parametrize("name", sorted(DEAD_OPTIONS))
def test_dead_options_of_the_original_are_accepted_with_a_notice(name, capsys):
    import nbt.misc.config
    nbt.misc.config._noticed.discard(name)
    opt = build_options([f"--{name}", "1", "--batch_size", "4"])
    assert opt.batch_size == 4 and not hasattr(opt, name)
    err = capsys.readouterr().err
    assert name in err and "no effect" in err and len(err.strip().splitlines()) == 1


def test_dead_options_in_an_original_config_file_are_accepted(tmp_path):
    cfg = tmp_path / "orig.yml"
    cfg.write_text("dataset: coco\nnum_layers: 1\nval_images_use: -1\ncider_df: 'corpus'\nbatch_size: 7\n")
    assert build_options(["--path_opt", str(cfg)]).batch_size == 7


def test_misspelled_choice_names_the_valid_values_and_the_nearest():
    with pytest.raises(ConfigError, match=r"'unqiue' is not one of all, unique, novel; did you mean 'unique'"):
        build_options(["--cbs_mode", "unqiue"])
    with pytest.raises(ConfigError, match="res101"):
        build_options(["--cnn_backend", "resnet101"])


def test_misspelled_boolean_suggests_the_value():
    with pytest.raises(ConfigError, match="did you mean True"):
        build_options(["--mGPUs", "Ture"])


@pytest.mark.parametrize("args,needle", [
    (["--batch_size", "-1"], "batch_size"), (["--batch_size", "0"], "batch_size"),
    (["--grad_accum", "0"], "grad_accum"), (["--learning_rate", "nan"], "learning_rate"),
    (["--learning_rate", "-1"], "learning_rate"), (["--beam_size", "0"], "beam_size"),
    (["--cbs_tag_size", "99"], "cbs_tag_size"), (["--drop_prob_lm", "1.5"], "drop_prob_lm"),
    (["--image_crop_size", "600", "--image_size", "576"], "image_crop_size"),
    (["--resume_epoch", "3"], "needs --id"),
])
def test_out_of_range_options_are_one_line_errors(args, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        build_options(args)
    assert "\n" not in str(err.value)


def test_range_errors_come_before_any_data_is_read(tmp_path):
    """The data paths do not exist: the option error is what the user sees, and nothing is made."""
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "--batch_size", "0", "--input_dic",
                        str(tmp_path / "typo" / "dic.json")], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: option 'batch_size'")
    assert not (tmp_path / "typo").exists()


def test_mistyped_input_dic_generates_no_world(tmp_path):
    typo = tmp_path / "data" / "wrold" / "dic_world.json"
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "--input_dic", str(typo)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr and str(typo) in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "save").exists()


def test_help_describes_every_option_with_the_config_defaults():
    text = format_help("main.py", "NBT", help_defaults([], str(ROOT / "cfgs" / "world.yml")))
    for name, f in Options.fields().items():
        assert f"--{name}\n" in text + "\n", name
        assert len(f.metadata["help"]) > 10, name
    assert "--batch_size\n      images per step (each with seq_per_img captions) [>= 1] (default: 20)" in text
    coco = format_help("main.py", "NBT", help_defaults(["--path_opt", str(ROOT / "cfgs" / "normal_coco_res101.yml")],
                                                       str(ROOT / "cfgs" / "world.yml")))
    assert "(default: 'res101')" in coco.split("--cnn_backend")[1].split("--")[0]
    assert "(default: 'tiny')" in text.split("--cnn_backend")[1].split("--")[0]


def test_main_help_runs_and_exits_zero():
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), "--path_opt", "cfgs/noc_world.yml", "--help"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--cbs_mode" in r.stdout
    assert "(default: 'novel')" in r.stdout.split("--cbs_mode")[1].split("--")[0]


def test_help_and_option_errors_answer_without_loading_torch():
    """--help and a bad option are answered before torch, the world generator or any data load."""
    for args in (["--help"], ["--batch_size", "-1"]):
        r = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "main.py"), *args], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
        assert r.returncode == (0 if args == ["--help"] else 2), r.stderr[-500:]
        assert "torch" not in imported and "nbt.prepro.world" not in imported, args


# The prepro commands of the original's data/README.md, verbatim.
ORIGINAL_DATA_README = [
    "--input_json data/coco/dataset_coco.json --split normal --output_dic_json data/coco/dic_coco.json "
    "--output_cap_json data/coco/cap_coco.json",
    "--input_json data/coco/dataset_coco.json --split robust --output_dic_json data/robust_coco/dic_coco.json "
    "--output_cap_json data/robust_coco/cap_coco.json",
    "--input_json data/coco/dataset_coco.json --split noc --output_dic_json data/noc_coco/dic_coco.json "
    "--output_cap_json data/noc_coco/cap_coco.json",
]


@pytest.mark.parametrize("line", ORIGINAL_DATA_README)
def test_original_prepro_commands_parse(line):
    from nbt.prepro.prepro_dic_coco import build_parser
    args = build_parser().parse_args(shlex.split(line))
    assert args.output_dic.endswith("dic_coco.json") and args.class_name_file == "data/coco/coco_class_name.txt"
    assert build_parser().parse_args(["--output_dic", "a", "--output_cap", "b"]).output_cap == "b"


@pytest.mark.parametrize("script", sorted(
    str(p.relative_to(ROOT)) for d in ("prepro", "tools") for p in (ROOT / d).glob("*.py")
    if '__name__ == "__main__"' in p.read_text()))
def test_every_command_answers_help(script):
    """The README sends users to these scripts: each prints its usage for --help and exits 0."""
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "usage" in (r.stdout + r.stderr).lower(), (script, r.stderr[-800:])
