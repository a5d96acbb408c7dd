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
    out = json.loads((tmp_path / "eval_results" / "session_run_test_beam3_first12.json").read_text())
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


def test_scheduled_sampling_probability_follows_the_schedule(world_dir):
    """0 before scheduled_sampling_start, then + increase_prob every increase_every epochs, capped."""
    from nbt.misc.trainer import ss_prob
    opt = world_options(world_dir, scheduled_sampling_start=2, scheduled_sampling_increase_every=3,
                        scheduled_sampling_increase_prob=0.1, scheduled_sampling_max_prob=0.25)
    assert [ss_prob(opt, e) for e in range(12)] == pytest.approx(
        [0, 0, 0, 0, 0, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.25])
    assert ss_prob(world_options(world_dir), 50) == 0                 # off by default (start -1)


def test_scheduled_sampling_at_one_feeds_the_models_own_predictions():
    """ss_prob = 1: every input after BOS is the model's previous argmax, so two captions of the
    same length give the same outputs; ss_prob = 0 feeds the captions themselves."""
    from nbt.misc.model import NBTDecoder
    torch.manual_seed(0)
    dec = NBTDecoder(vocab_size=30, num_classes=4, fine_class=[1, 1, 2, 2, 3, 3, 4, 4], feat_dim=8, rnn_size=16,
                     input_encoding_size=8, att_hid_size=8, class_emb_size=4, loc_emb_size=4, drop_prob=0.0,
                     stride=8, image_size=64).train()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 5, 2, generator=g) * 40
    props = torch.cat([xy, xy + 10, torch.randint(1, 5, (2, 5, 1), generator=g).float(), torch.rand(2, 5, 1)], -1)
    f = dec.encode(torch.randn(2, 8, 8, 8, generator=g), props, torch.ones(2, 5, dtype=torch.bool))
    a = torch.tensor([[[5, 6, 7, 8, 0]], [[9, 4, 4, 0, 0]]])
    b = torch.tensor([[[5, 11, 12, 13, 0]], [[9, 20, 21, 0, 0]]])          # the same lengths
    outs = {}
    for prob in (0.0, 1.0):
        for name, words in (("a", a), ("b", b)):
            batch = {"words": words, "vis_cls": torch.zeros_like(words)}
            outs[prob, name] = dec(f, batch, ss_prob=prob)["word_logp"]
    assert torch.allclose(outs[1.0, "a"], outs[1.0, "b"])
    assert not torch.allclose(outs[0.0, "a"][:, 2:], outs[0.0, "b"][:, 2:])
    assert torch.allclose(outs[0.0, "a"][:, :1], outs[1.0, "a"][:, :1])    # the BOS step: fed alike
    assert not torch.allclose(outs[0.0, "a"][:, 1:], outs[1.0, "a"][:, 1:])


def test_training_samples_with_the_scheduled_probability(world_dir, monkeypatch):
    """The schedule reaches the decoder: 2 steps of epoch 0 feed the captions, the 2 of epoch 1
    replace inputs by the model's own predictions with probability 0.25."""
    from nbt.misc.captioner import Captioner
    from nbt.misc.decoder_base import CaptionDecoder
    from nbt.misc.session import train
    steps, sampled = [], []
    forward, sample = Captioner.forward, CaptionDecoder._scheduled_sample
    monkeypatch.setattr(Captioner, "forward", lambda self, batch, ss_prob=0.0, scst=None: (
        steps.append(ss_prob), forward(self, batch, ss_prob, scst))[1])
    monkeypatch.setattr(CaptionDecoder, "_scheduled_sample", lambda self, tok, w, r, f, prob: (
        sampled.append(prob), sample(self, tok, w, r, f, prob))[1])
    run = train(world_options(world_dir, id="ss", scheduled_sampling_start=0, scheduled_sampling_increase_every=1,
                              scheduled_sampling_increase_prob=0.25, max_epochs=2, eval_split="",
                              train_max_images=16))
    assert len(run["state"]["history"]) == 2
    assert steps == [0.0, 0.0, 0.25, 0.25]
    assert sampled and set(sampled) == {0.25}


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
        assert ours == generated                  # (test_world checks those files against the generator's truth)
        # each image lands in the split its split file names (read here from the file, not from prepro/splits.py)
        if scheme == "robust":
            want = {int(e["img_id"]): s for s in ("train", "val", "test") for e in ours[f"{s}_id"]}   # the original's entries
        else:
            want = {int(i): s for s, parts in (("train", ["train"]), ("val", ["val", "val_train"]),
                                               ("test", ["test", "test_train"])) for part in parts for i in ours[part]}
        dic = json.loads((tmp_path / "d.json").read_text())
        assert {im["id"]: im["split"] for im in dic["images"]} == want
