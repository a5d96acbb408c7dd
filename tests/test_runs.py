"""Run folders and results are never overwritten by surprise; signals stop a run cleanly and
resumably; two processes never write one run; logs and TensorBoard say what happens."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, world_options
from nbt.misc.checkpoint import load_checkpoint
from nbt.misc.io import DataError
from test_train import assert_same_run, cli, resumable_options, run_main


@pytest.fixture(scope="module")
def first_run(world_dir):
    from nbt.misc.session import train
    return train(world_options(world_dir, id="first", max_iters=2, eval_split="", region_grouping=True))["dir"]


def test_resume_continues_in_the_folder_it_resumed_from(world_dir, first_run):
    from nbt.misc.session import train
    before = load_checkpoint(f"{first_run}/model.pth")["iteration"]
    run = train(world_options(world_dir, start_from=first_run, max_iters=4, eval_split="", region_grouping=True))
    assert run["dir"] == first_run and load_checkpoint(f"{first_run}/model.pth")["iteration"] == before + 2
    assert not (world_dir / "save" / "run").exists()


def test_every_shipped_config_resumes_and_evaluates_under_the_runs_own_name():
    """The cfgs carry an `id` (as the original's did): it must not redirect `--start_from save/nu`."""
    from nbt.misc.config import build_options
    from nbt.misc.session import results_path, run_dir
    for cfg in sorted((ROOT / "cfgs").glob("*.yml")):
        opt = build_options(["--path_opt", str(cfg), "--start_from", "save/nu", "--max_epochs", "4"])
        assert run_dir(opt) == Path("save/nu") and results_path(opt, "test").name == "nu_test_greedy.json", cfg.name
        partial = dataclasses.replace(opt, eval_max_images=20)
        assert results_path(partial, "test").name == "nu_test_greedy_first20.json", cfg.name      # never the whole's
        opt = build_options(["--path_opt", str(cfg), "--start_from", "save/nu", "--id", "nu2"])
        assert run_dir(opt) == Path("save/nu2"), cfg.name
        assert run_dir(build_options(["--path_opt", str(cfg)])) == Path("save") / cfg.stem, cfg.name


def test_new_run_over_another_runs_checkpoints_is_refused_unless_overwrite(world_dir, first_run):
    from nbt.misc.session import train
    opt = world_options(world_dir, id="first", max_iters=1, eval_split="")
    before = (world_dir / "save" / "first" / "model.pth").stat().st_mtime_ns
    with pytest.raises(DataError, match="already holds a run.*--overwrite"):
        train(opt)
    assert (world_dir / "save" / "first" / "model.pth").stat().st_mtime_ns == before
    other = world_options(world_dir, id="replaced", max_iters=1, eval_split="")
    train(other)
    run = train(world_options(world_dir, id="replaced", max_iters=2, eval_split="", overwrite=True))
    assert load_checkpoint(f"{run['dir']}/model.pth")["iteration"] == 2


def test_resume_with_another_model_option_takes_the_checkpoints(world_dir, first_run):
    """--region_grouping False on a grouping run: the checkpoint defines the network."""
    from nbt.misc.session import train
    run = train(world_options(world_dir, start_from=first_run, id="regrouped", max_iters=1, eval_split="",
                              region_grouping=False, max_epochs=2))
    assert load_checkpoint(f"{run['dir']}/model.pth")["config"]["region_grouping"] is True


def test_second_process_on_a_locked_run_is_refused_with_its_pid(world_dir, tmp_path):
    from nbt.misc.session import train
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"os.makedirs({str(world_dir / 'save' / 'locked')!r}, exist_ok=True)\n"
        f"fd = os.open({str(world_dir / 'save' / 'locked' / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            train(world_options(world_dir, id="locked", max_iters=1, eval_split=""))
    finally:
        holder.kill()
        holder.wait()
    train(world_options(world_dir, id="locked", max_iters=1, eval_split=""))      # released with its owner
    assert not (world_dir / "save" / "locked" / ".lock").exists()


def test_a_killed_runs_lock_is_not_kept_by_its_forked_children(tmp_path):
    """The loader's workers are forked from the run: when the run is killed, a worker that lives
    on a moment must not keep the run folder locked (a resume right after SIGKILL)."""
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "import _checkout\n"
        "from nbt.misc.session import RunLock\n"
        f"lock = RunLock(Path({str(tmp_path)!r})).__enter__()\n"
        "if os.fork() == 0:\n"
        "    time.sleep(30); os._exit(0)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60)
    from nbt.misc.session import RunLock
    with RunLock(tmp_path):                       # at once: the child still sleeps
        pass


def test_leftover_temporary_checkpoint_files_are_removed(world_dir, first_run):
    from nbt.misc.session import train
    junk = [world_dir / "save" / "first" / ".model.pth.abc123.tmp", world_dir / "save" / "first" / ".epoch_1.pth.x.tmp"]
    for p in junk:
        p.write_bytes(b"half a checkpoint")
    train(world_options(world_dir, start_from=first_run, max_iters=1, eval_split="", region_grouping=True,
                        max_epochs=1, overwrite=False, train_max_images=8))
    assert not any(p.exists() for p in junk)


def _until_line(proc, needle, timeout=300):
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError("".join(lines))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_writes_a_resumable_checkpoint_and_resume_is_bit_identical(world_dir, reference_run, sig, code):
    name = sig.name.lower()
    base = resumable_options(world_dir)
    stopped = run_main(cli(base, id=f"stopped_{name}"))
    _until_line(stopped, "iter 3 ")
    stopped.send_signal(sig)
    out, _ = stopped.communicate(timeout=300)
    assert stopped.returncode == code, out
    assert "Traceback" not in out and f"--start_from {world_dir / 'save' / f'stopped_{name}'}" in out
    ckpt = load_checkpoint(world_dir / "save" / f"stopped_{name}" / "model.pth")
    assert ckpt["epoch"] == 0 and 3 <= ckpt["batch_in_epoch"] < 8, (ckpt["epoch"], ckpt["batch_in_epoch"])
    resumed = run_main(cli(base, start_from=str(world_dir / "save" / f"stopped_{name}")))
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert_same_run(reference_run, world_dir / "save" / f"stopped_{name}", rng=False)


def test_progress_lines_reach_a_log_file_with_speed_and_time_left(world_dir, tmp_path):
    opt = world_options(world_dir, id="logged", max_epochs=2, eval_split="", disp_interval=2, train_max_images=32,
                        val_every_epoch=1, eval_max_images=8)
    with open(tmp_path / "log.txt", "w") as log:
        p = subprocess.run([sys.executable, str(ROOT / "main.py"), *cli(opt)], cwd=ROOT, stdout=log,
                           stderr=subprocess.STDOUT, timeout=600)
    text = (tmp_path / "log.txt").read_text()
    assert p.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("iter ")]
    assert len(lines) == 4 and "img/s" in lines[0] and "epoch ends in" in lines[0] and "plural" in lines[0]
    assert "of training left" in text and "val CIDEr" in text


def test_tensorboard_gets_slot_grouping_losses_and_grounding(world_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from nbt.misc.session import train
    run = train(world_options(world_dir, id="tb", max_epochs=1, eval_split="", train_max_images=16,
                              val_every_epoch=1, eval_max_images=8, region_grouping=True))
    acc = EventAccumulator(f"{run['dir']}/tb")
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/words", "train/plural", "train/fine", "train/grouping", "train/lr", "val/CIDEr"} <= tags
    assert any(t.startswith("val/grounding") for t in tags)


def test_results_file_names_the_decoding_and_is_never_replaced_by_another_checkpoint(world_dir, first_run, tmp_path):
    from nbt.misc.session import inference
    os.chdir(tmp_path)
    try:
        opt = world_options(world_dir, start_from=first_run, eval_max_images=4, region_grouping=True)
        greedy = inference(opt)["path"]
        beam = inference(world_options(world_dir, start_from=first_run, eval_max_images=4, beam_size=2,
                                       cbs=True, cbs_mode="unique", cbs_tag_size=1, region_grouping=True))["path"]
        assert greedy.endswith("first_test_greedy_first4.json") and beam.endswith("first_test_beam2_cbs-unique1_first4.json")
        inference(opt)                                                   # the same checkpoint again: fine
        other = world_options(world_dir, start_from=first_run, eval_max_images=4, load_best_score=False)
        ckpt = load_checkpoint(f"{first_run}/model.pth")
        ckpt["iteration"] += 1
        torch.save(ckpt, f"{first_run}/model.pth")
        with pytest.raises(DataError, match="another checkpoint.*--overwrite"):
            inference(other)
        assert json.loads((tmp_path / greedy).read_text())["checkpoint"]["iteration"] == ckpt["iteration"] - 1
        inference(world_options(world_dir, start_from=first_run, eval_max_images=4, load_best_score=False,
                                overwrite=True))
    finally:
        os.chdir(ROOT)


def test_format_table_prints_scores_times_100():
    from nbt.misc.trainer import format_table
    text = format_table({"overall": {"CIDEr": 1.2346, "METEOR": None}, "grounding": {"visual_words": 12,
                                                                                  "grounding_accuracy": 0.954}})
    assert "CIDEr" in text and "123.5" in text and "95.4" in text and "skipped" in text and "12" in text


def test_evaluating_a_run_without_a_best_checkpoint_says_it_takes_the_last(tmp_path, capsys):
    """A run too short to validate has no model-best.pth: evaluation says which file it takes."""
    from nbt.misc.session import best_or_last
    (tmp_path / "model.pth").write_bytes(b"x")
    opt = world_options(ROOT, start_from=str(tmp_path))
    assert best_or_last(opt) == tmp_path / "model.pth"
    assert "has no model-best.pth (no validation has run" in capsys.readouterr().out
    (tmp_path / "model-best.pth").write_bytes(b"x")
    assert best_or_last(opt) == tmp_path / "model-best.pth" and capsys.readouterr().out == ""
