"""Our vectorised CIDEr-D against pycocoevalcap, and self-critical training."""
import json

import numpy as np
import pytest
import torch
from pycocoevalcap.cider.cider import Cider

from conftest import world_options
from nbt.misc.cider import CiderD, document_frequency

def test_cider_d_equals_pycocoevalcap_on_nlg_eval_files(caption_metrics):
    hyp = [l.strip() for l in (caption_metrics / "hyp.txt").read_text().strip().splitlines()]
    r1 = (caption_metrics / "ref1.txt").read_text().strip().splitlines()
    r2 = (caption_metrics / "ref2.txt").read_text().strip().splitlines()
    refs = [[a.strip(), b.strip()] for a, b in zip(r1, r2)]
    ours, ours_each = CiderD().compute_score(hyp, refs)
    theirs, theirs_each = Cider().compute_score({i: refs[i] for i in range(2)}, {i: [hyp[i]] for i in range(2)})
    assert abs(ours - theirs) < 1e-9 and np.abs(ours_each - theirs_each).max() < 1e-9
    assert abs(ours - json.loads((caption_metrics / "expected_scores.json").read_text())["CIDEr"]) < 5e-6


def test_cider_d_equals_pycocoevalcap_on_world_captions(world_dir):
    data = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    refs = [[s["raw"] for s in im["sentences"][1:]] for im in data]
    hyps = [im["sentences"][0]["raw"] + (" red" if i % 3 else "") for i, im in enumerate(data)]
    ours, ours_each = CiderD().compute_score(hyps, refs)
    theirs, theirs_each = Cider().compute_score({i: refs[i] for i in range(len(refs))},
                                                {i: [hyps[i]] for i in range(len(hyps))})
    assert abs(ours - theirs) < 1e-9 and np.abs(ours_each - theirs_each).max() < 1e-9


def test_word_id_scoring_with_cached_refs_equals_pycocoevalcap(world_dir):
    """score_ids with a df table of the whole data set (SCST's setting) against pycocoevalcap's
    CiderScorer over that same data set (its df = the table's), and against the string path."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer
    data = json.loads((world_dir / "dataset_world.json").read_text())["images"]
    dic = json.loads((world_dir / "dic_world.json").read_text())
    w2i = {w: int(i) for i, w in dic["ix_to_word"].items()}
    known = [i for i, im in enumerate(data) if all(w in w2i for s in im["sentences"] for w in s["tokens"])]
    scored, donors = known[:40], known[40:80]
    refs = [[s["raw"] for s in data[i]["sentences"]] for i in scored]
    hyps = [data[j]["sentences"][0]["raw"] for j in donors]
    df = document_frequency([[s["raw"] for s in im["sentences"]] for im in data])
    scorer = CiderD(df, w2i)

    def ids(sents):
        arr = np.zeros((len(sents), max(len(s.split()) for s in sents)), np.int64)
        for i, s in enumerate(sents):
            arr[i, :len(s.split())] = [w2i[w] for w in s.split()]
        return arr
    by_id = scorer.score_ids(ids(hyps), list(range(40)), {i: ids(refs[i]) for i in range(40)})
    reference = CiderScorer(n=4, sigma=6.0)
    hyp_of = dict(zip(scored, hyps))
    for i, im in enumerate(data):                       # every image: pycocoevalcap's df is the table's
        reference += (hyp_of.get(i, im["sentences"][0]["raw"]), [s["raw"] for s in im["sentences"]])
    theirs = reference.compute_score()[1][scored]
    assert np.abs(by_id - theirs).max() < 1e-9 and by_id.max() > 0.1
    assert np.abs(by_id - CiderD(df).compute_score(hyps, refs)[1]).max() < 1e-9
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


class Replay:
    """torch.multinomial that records its draws, then gives them back in the same order: the
    same samples drawn again from a changed model, to compare their log-probabilities."""

    def __init__(self):
        self.draws, self.at, self.real = [], None, torch.multinomial

    def __call__(self, *args, **kwargs):
        if self.at is None:
            self.draws.append(self.real(*args, **kwargs))
            return self.draws[-1]
        self.at += 1
        return self.draws[self.at - 1]

    def again(self) -> "Replay":
        self.at = 0
        return self


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_step_makes_samples_above_the_baseline_likelier(world_dir, baseline, monkeypatch):
    """One SGD step on the self-critical loss, then the same samples scored again: the reward
    and baseline it reports are those of its samples (mean baseline: the other samples of the image;
    greedy: the greedy caption's CIDEr-D), and sum_i (r_i - b_i) * (change of log p_i) > 0, i.e.
    the captions that beat the baseline became likelier (to first order lr / M * |sum_i adv_i
    grad log p_i|^2, as REINFORCE must)."""
    from nbt.misc.builders import build_model
    from nbt.misc.dataset import CaptionDataset, DataBundle, collate
    from nbt.misc.decoding import greedy
    from nbt.misc.scst import SelfCritical, region_classes, sample_with_logprobs
    from nbt.misc.trainer import freeze_batchnorm_stats
    n = 4
    opt = world_options(world_dir, train_sample_n=n, scst_baseline=baseline)
    bundle = DataBundle.load(opt)
    batch = collate([CaptionDataset(bundle, "train", train=True)[(i, 0)] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(opt, bundle, torch.device("cpu")).train()
    freeze_batchnorm_stats(model)                                 # as train_one_epoch does for SCST
    scst = SelfCritical(bundle, opt)
    replay = Replay()
    monkeypatch.setattr(torch, "multinomial", replay)
    keys = [r for r in batch["rows"] for _ in range(n)]

    def samples():
        with torch.no_grad():
            f = model.encode(batch)
            s = sample_with_logprobs(model.decoder, f.expand(n), max_len=opt.seq_length)
        return f, s, (s.logp * s.mask).sum(1)                      # (B * n,) log p of each caption
    f, sample, before = samples()
    reward = scst.rewards(scst.render(sample.tokens, sample.plural, sample.fine, region_classes(f.expand(n))), keys)
    if baseline == "mean":
        r = reward.reshape(-1, n)
        base = ((r.sum(1, keepdims=True) - r) / (n - 1)).reshape(-1)
    else:                                      # the greedy captions, rendered and scored like the samples
        g = greedy(model.decoder.eval(), f, max_len=opt.seq_length)
        model.decoder.train()
        T = max(len(d.tokens) for d in g) + 1
        tok, pl, fi = (torch.tensor([getattr(d, k) + [pad] * (T - len(d.tokens)) for d in g])
                       for k, pad in (("tokens", 0), ("plural", 0), ("fine", -1)))
        base = np.repeat(scst.rewards(scst.render(tok, pl, fi, region_classes(f)), list(batch["rows"])), n)
    advantage = reward - base
    if baseline == "mean":
        assert (advantage > 0).any() and (advantage < 0).any()
    else:                                      # a random model's greedy caption may score 0: none below it
        assert advantage.std() > 0

    replay.again()
    out = model(batch, scst=scst)                                  # the step under test, on the same samples
    assert out["reward"] == pytest.approx(reward.mean(), abs=1e-6)
    assert out["baseline"] == pytest.approx(base.mean(), abs=1e-6)
    adv = torch.as_tensor(advantage, dtype=torch.float32)[:, None]
    reinforce = -(adv * sample.logp * sample.mask).sum() / sample.mask.sum()     # that baseline, per token
    assert float(out["loss"].detach()) == pytest.approx(float(reinforce), rel=1e-4)
    out["loss"].backward()
    grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
    replay.again()
    _, again, after = samples()
    assert torch.equal(again.tokens, sample.tokens)                 # the same captions, scored anew
    gain = float((torch.as_tensor(advantage, dtype=torch.float32) * (after - before)).sum())
    print(f"\nSCST ({baseline}): sum of advantage x change of log p = {gain:.3g}")
    assert gain > 0


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
    assert "reward" not in hist[0] and "baseline" not in hist[0] and "words" in hist[0]      # XE
    assert {"reward", "baseline"} <= set(hist[1]) and "words" not in hist[1]                  # SCST


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
