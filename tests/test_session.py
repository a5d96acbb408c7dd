"""Whole sessions: --inference_only, checkpoint compatibility, GloVe, NOC embedding copy,
scheduled sampling, gradient accumulation, split regeneration on the world's files."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, world_options
from nbt.misc.io import DataError


@pytest.fixture(scope="module")
def tiny_run(world_dir):
    from nbt.misc.session import train
    return train(world_options(world_dir, id="session_run", max_iters=2, eval_split=""))["dir"]


def test_inference_only_prints_table_writes_results_and_exits(world_dir, tiny_run, tmp_path):
    from test_train import cli
    opt = world_options(world_dir, id="session_run")
    args = cli(opt, inference_only=True, beam_size=3, start_from=tiny_run, eval_max_images=12)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "CIDEr" in r.stdout and "grounding_accuracy" in r.stdout
    out = json.loads((tmp_path / "eval_results" / "session_run_test_beam3.json").read_text())
    assert len(out["imgToEval"]) == 12 and "scores" in out["imgToEval"][0]
    assert out["config"]["beam_size"] == 3


def test_checkpoint_of_other_vocabulary_is_refused(world_dir, tiny_run, tmp_path):
    from nbt.misc.checkpoint import check_compatible, load_checkpoint
    ckpt = load_checkpoint(tiny_run)
    with pytest.raises(DataError, match="vocabulary"):
        check_compatible(ckpt, "0000000000000000", ckpt["classes"], "x")
    with pytest.raises(DataError, match="class list"):
        check_compatible(ckpt, ckpt["fingerprint"], ckpt["classes"][:-1], "x")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pth"):
        load_checkpoint(bad)


def test_glove_vectors_and_noc_embedding_copy(world_dir, tmp_path):
    from nbt.misc.captioner import read_glove
    from nbt.misc.dataset import DataBundle
    from nbt.misc.builders import apply_noc_word_map, build_model
    glove = tmp_path / "glove.txt"
    glove.write_text("circle 1 0 0 0\nsquare 0 1 0 0\nheart 0 0 1 0\n")
    names = ["circle", "square", "heart", "hot dog"]
    vecs = read_glove(str(glove), names, 4, seed=1)
    assert torch.equal(vecs[1], torch.tensor([1.0, 0, 0, 0])) and vecs.shape == (5, 4)
    assert torch.equal(vecs, read_glove(str(glove), names, 4, seed=1))       # seeded unknown words
    opt = world_options(world_dir, "noc", glove_path=str(glove), class_emb_size=4, decode_noc=True,
                        noc_word_map={"hexagon": "circle"})
    bundle = DataBundle.load(opt)
    model = build_model(opt, bundle, torch.device("cpu"))
    emb = model.decoder.regions.class_emb.weight
    assert not emb.requires_grad and torch.equal(emb[1], torch.tensor([1.0, 0, 0, 0]))
    hexagon = list(bundle.classes.names).index("hexagon") + 1
    apply_noc_word_map(model, opt, bundle)
    assert torch.equal(emb[hexagon], emb[1])
    word = model.decoder.embed[0].weight
    assert torch.equal(word[model.decoder.vocab_size + hexagon], word[model.decoder.vocab_size + 1])


def test_scheduled_sampling_trains(world_dir):
    from nbt.misc.session import train
    run = train(world_options(world_dir, id="ss", scheduled_sampling_start=0, scheduled_sampling_increase_every=1,
                              scheduled_sampling_increase_prob=0.25, max_epochs=2, eval_split="",
                              train_max_images=24))
    assert len(run["state"]["history"]) == 2


def test_gradient_accumulation_equals_one_big_batch(world_dir):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.losses import combine
    from nbt.misc.trainer import batch_counts
    from nbt.misc.builders import build_model
    opt = world_options(world_dir, cnn_backend="res18", finetune_cnn=False, att_feat_size=512,
                        region_grouping=True)
    bundle = DataBundle.load(opt)
    items = [CaptionDataset(bundle, "train", train=True)[(i, 0)] for i in range(6)]

    def grads(batches):
        model = build_model(opt, bundle, torch.device("cpu"))
        total = [sum(batch_counts(b, opt.seq_length)[i] for b in batches) for i in (0, 1)]
        for b in batches:
            combine(model(b), (1, 1, 1, 1), *total)["loss"].backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    big = grads([collate(items)])
    acc = grads([collate(items[:3]), collate(items[3:])])
    assert any(n.startswith("decoder.grouping.") for n in big)      # the pair loss reaches the module
    for n, g in big.items():
        assert torch.allclose(acc[n], g, atol=1e-6, rtol=1e-4), n


def test_robust_and_noc_regeneration_match_the_world_generator(world_dir, tmp_path):
    from nbt.prepro import prepro_dic_coco
    for scheme in ("robust", "noc"):
        out = tmp_path / f"{scheme}.json"
        assert prepro_dic_coco.main([
            "--input_json", str(world_dir / "dataset_world.json"), "--class_name_file",
            str(world_dir / "world_class_name.txt"), "--instances_json",
            str(world_dir / "annotations" / "instances_world.json"), "--split", scheme,
            "--split_file", str(out), "--held_out", "hexagon,heart", "--seed", "7",
            "--robust_max_test", str(int(160 * 0.2)), "--output_dic", str(tmp_path / "d.json"),
            "--output_cap", str(tmp_path / "c.json")]) == 0
        ours = json.loads(out.read_text())
        generated = json.loads((world_dir / f"split_{scheme}_world.json").read_text())
        assert ours == generated
