"""Our vectorised CIDEr-D against pycocoevalcap, and self-critical training."""
import json

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from conftest import SHARED, world_options
from nbt.misc.cider import CiderD, document_frequency

METRICS = SHARED / "caption-metrics"


@pytest.mark.skipif(not METRICS.is_dir(), reason="../shared/data/caption-metrics not present")
def test_cider_d_equals_pycocoevalcap_on_nlg_eval_files():
    hyp = [l.strip() for l in (METRICS / "hyp.txt").read_text().strip().splitlines()]
    r1 = (METRICS / "ref1.txt").read_text().strip().splitlines()
    r2 = (METRICS / "ref2.txt").read_text().strip().splitlines()
    refs = [[a.strip(), b.strip()] for a, b in zip(r1, r2)]
    ours, ours_each = CiderD().compute_score(hyp, refs)
    theirs, theirs_each = Cider().compute_score({i: refs[i] for i in range(2)}, {i: [hyp[i]] for i in range(2)})
    assert abs(ours - theirs) < 1e-9 and np.abs(ours_each - theirs_each).max() < 1e-9
    assert abs(ours - json.loads((METRICS / "expected_scores.json").read_text())["CIDEr"]) < 5e-6


def test_cider_d_equals_pycocoevalcap_on_world_captions(world_dir):
    data = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    refs = [[s["raw"] for s in im["sentences"][1:]] for im in data]
    hyps = [im["sentences"][0]["raw"] + (" red" if i % 3 else "") for i, im in enumerate(data)]
    ours, ours_each = CiderD().compute_score(hyps, refs)
    theirs, theirs_each = Cider().compute_score({i: refs[i] for i in range(len(refs))},
                                                {i: [hyps[i]] for i in range(len(hyps))})
    assert abs(ours - theirs) < 1e-9 and np.abs(ours_each - theirs_each).max() < 1e-9


def test_word_id_scoring_with_cached_refs_equals_strings(world_dir):
    data = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    dic = json.loads((world_dir / "dic_world.json").read_text())
    w2i = {w: int(i) for i, w in dic["ix_to_word"].items()}
    known = [im for im in data if all(w in w2i for s in im["sentences"] for w in s["tokens"])]
    refs = [[s["raw"] for s in im["sentences"]] for im in known[:40]]
    hyps = [known[i + 40]["sentences"][0]["raw"] for i in range(40)]
    df = document_frequency([[s["raw"] for s in im["sentences"]] for im in data])
    scorer = CiderD(df, w2i)

    def ids(sents):
        arr = np.zeros((len(sents), max(len(s.split()) for s in sents)), np.int64)
        for i, s in enumerate(sents):
            arr[i, :len(s.split())] = [w2i[w] for w in s.split()]
        return arr
    by_id = scorer.score_ids(ids(hyps), list(range(40)), {i: ids(refs[i]) for i in range(40)})
    by_str = CiderD(df).compute_score(hyps, refs)[1]
    assert np.abs(by_id - by_str).max() < 1e-9
    again = scorer.score_ids(ids(hyps), list(range(40)), {})       # references now come from the cache
    assert np.array_equal(again, by_id)


def test_word_id_scoring_with_repeated_images_unknown_ngrams_and_uneven_references(world_dir):
    """SCST batches: several samples per image, images with 1..6 references, n-grams the df table
    never saw (df from half of the data), an empty sample."""
    data = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    dic = json.loads((world_dir / "dic_world.json").read_text())
    w2i = {w: int(i) for i, w in dic["ix_to_word"].items()}
    known = [im for im in data if all(w in w2i for s in im["sentences"] for w in s["tokens"])]
    df = document_frequency([[s["raw"] for s in im["sentences"]] for im in known[::2]])
    rng = np.random.default_rng(0)
    refs = [[s["raw"] for s in im["sentences"][:1 + i % 6]] for i, im in enumerate(known[1:31:2])]
    keys = [int(k) for k in rng.integers(0, len(refs), 90)]
    hyps = [known[40 + i]["sentences"][i % 3]["raw"] if i % 17 else "" for i in range(90)]
    hyps[5] = refs[keys[5]][0]                                       # a perfect sample

    def ids(sents):
        arr = np.zeros((len(sents), max([len(s.split()) for s in sents] + [1])), np.int64)
        for i, s in enumerate(sents):
            arr[i, :len(s.split())] = [w2i[w] for w in s.split()]
        return arr
    scorer = CiderD(df, w2i)
    by_id = scorer.score_ids(ids(hyps), keys, lambda k: ids(refs[k]))
    by_str = CiderD(df).compute_score(hyps, [refs[k] for k in keys])[1]
    assert np.abs(by_id - by_str).max() < 1e-9 and by_id[5] > 0


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_step_updates_the_model(world_dir, baseline):
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.scst import SelfCritical
    from nbt.misc.builders import build_model
    opt = world_options(world_dir, train_sample_n=3, scst_baseline=baseline)
    bundle = DataBundle.load(opt)
    batch = collate([CaptionDataset(bundle, "train", train=True)[(i, 0)] for i in range(4)])
    model = build_model(opt, bundle, torch.device("cpu")).train()
    scst = SelfCritical(bundle, opt)
    out = model(batch, scst=scst)
    assert torch.isfinite(out["loss"]) and out["reward"] >= 0
    out["loss"].backward()
    grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_scst_renders_filled_captions(world_dir):
    from nbt.misc.dataset import DataBundle
    from nbt.misc.scst import SelfCritical
    bundle = DataBundle.load(world_options(world_dir))
    scst = SelfCritical(bundle, world_options(world_dir))
    V = bundle.vocab.size
    fine = bundle.classes.fine_words.index("ring")
    circle = bundle.classes.names.index("circle") + 1
    tokens = torch.tensor([[bundle.vocab.encode("two"), V + 0, 0]])
    arr = scst.render(tokens, torch.tensor([[0, 1, 0]]), torch.tensor([[-1, fine, -1]]), torch.tensor([[circle]]))
    assert [bundle.vocab.word(i) for i in arr[0] if i] == ["two", "rings"]
    # the reward sees the slot exactly as evaluation renders it (one renderer), fallback included
    from nbt.misc.decoding import Decoded
    from nbt.misc.slot_filling import fill_slots
    for fine_choice in (fine, -1):
        d = Decoded(tokens=[bundle.vocab.encode("two"), V + 0], plural=[0, 1], fine=[-1, fine_choice], score=0.0)
        text = fill_slots(d, bundle.vocab, torch.tensor([[0, 0, 9, 9, circle, 0.9]])).text
        arr = scst.render(torch.tensor([d.tokens]), torch.tensor([d.plural]), torch.tensor([d.fine]),
                          torch.tensor([[circle]]))
        assert " ".join(bundle.vocab.word(i) for i in arr[0] if i) == text


def test_main_switches_to_scst_after_xe(world_dir):
    from nbt.misc.session import train
    opt = world_options(world_dir, id="scst", max_epochs=2, self_critical_after=1, train_sample_n=2,
                        scst_learning_rate=1e-4, eval_split="", train_max_images=16)
    run = train(opt)
    hist = run["state"]["history"]
    assert len(hist) == 2 and "loss" in hist[1]


def test_scst_keeps_batchnorm_statistics():
    """SCST fine-tunes the policy: BatchNorm layers normalise with, and do not update, their running
    statistics (one SCST epoch at a zero learning rate moved world test CIDEr by 5 points before)."""
    from nbt.misc.backbone import TinyCNN
    from nbt.misc.trainer import freeze_batchnorm_stats
    torch.manual_seed(0)
    net = TinyCNN(channels=8).train()
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    freeze_batchnorm_stats(net)
    net(torch.randn(2, 3, 32, 32))
    after = net.state_dict()
    assert before and all(torch.equal(v, after[k]) for k, v in before.items())
    assert net.training                                   # dropout etc. still in training mode
