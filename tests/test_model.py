"""Tiny random models: shapes of every module, and the decoding guarantees."""

import pytest
import torch

from nbt.misc.attention import AdditiveAttention, additive_scores
from nbt.misc.backbone import Backbone
from nbt.misc.decoding import beam_search, greedy, select_constraints
from nbt.misc.losses import caption_targets, combine, xe_loss_sums
from nbt.misc.model import NBTDecoder
from nbt.misc.regions import RegionEncoder
from nbt.misc.slot_heads import SlotHeads
from nbt.pooling.roi_align import pool_regions

V, C, H = 30, 4, 16
FG_CLASS = [1, 1, 2, 2, 2, 3, 4, 4]


def tiny_decoder(**kw):
    torch.manual_seed(0)
    return NBTDecoder(vocab_size=V, num_classes=C, fine_class=FG_CLASS, feat_dim=8, rnn_size=H,
                      input_encoding_size=8, att_hid_size=8, class_emb_size=4, loc_emb_size=4,
                      drop_prob=0.0, stride=8, image_size=64, **kw).eval()


def features(dec, B=3, R=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    conv = torch.randn(B, 8, 8, 8, generator=g)
    xy = torch.rand(B, R, 2, generator=g) * 40
    wh = torch.rand(B, R, 2, generator=g) * 20 + 4
    cls = torch.randint(1, C + 1, (B, R, 1), generator=g).float()
    score = torch.rand(B, R, 1, generator=g)
    props = torch.cat([xy, xy + wh, cls, score], -1)
    mask = torch.ones(B, R, dtype=torch.bool)
    mask[-1, -2:] = False
    return dec.encode(conv, props, mask), props, mask


def test_roi_align_shapes_and_box_content():
    conv = torch.zeros(1, 2, 8, 8)
    conv[0, 0, :4, :4] = 1.0                                 # top-left quarter of a 64 px image
    boxes = torch.tensor([[[0.0, 0, 31, 31], [32, 32, 63, 63]]])
    out = pool_regions(conv, boxes, stride=8)
    assert out.shape == (1, 2, 2)
    assert out[0, 0, 0] > 0.9 and out[0, 1, 0] < 0.1


def test_attention_respects_mask():
    att = AdditiveAttention(query_size=4, key_size=3, hidden=5)
    values = torch.randn(2, 6, 3)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :2] = True
    values2 = values.clone()
    values2[:, 2:] = 100.0
    out1 = att(torch.randn(2, 4), values, att.project(values), mask)
    assert out1.shape == (2, 3)
    q = torch.randn(2, 4)
    assert torch.allclose(att(q, values, att.project(values), mask), att(q, values2, att.project(values), mask))


def test_attention_count_grows_with_matching_items():
    """The count channel sums sigmoid scores over valid items: two copies of a matching item
    count about twice what one does; padded items never count."""
    torch.manual_seed(0)
    att = AdditiveAttention(query_size=2, key_size=2, hidden=2)
    with torch.no_grad():
        att.key_proj.weight.copy_(torch.eye(2) * 10)
        att.key_proj.bias.zero_()
        att.query_proj.weight.zero_()
        att.query_proj.bias.zero_()
        att.score.weight.copy_(torch.tensor([[10.0, -10.0]]))
        att.score.bias.zero_()
    hit, miss = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    values = torch.stack([torch.stack([hit, miss, miss, miss]), torch.stack([hit, hit, miss, hit])])   # (2, 4, 2)
    mask = torch.tensor([[True, True, True, False], [True, True, True, False]])
    with torch.no_grad():
        out, n = att(torch.zeros(2, 2), values, att.project(values), mask, count=True)
    assert out.shape == (2, 2) and n.shape == (2, 1)
    assert abs(float(n[0]) - 1.0) < 0.01 and abs(float(n[1]) - 2.0) < 0.01


@pytest.mark.parametrize("rows_per_chunk", [2, 0])
def test_chunked_additive_scores_equal_autograd_of_the_plain_formula(rows_per_chunk):
    """additive_scores (T queries per row, hand-written backward, rows in chunks: 2 of 5 rows
    leaves a short last chunk) = w^T tanh(keys + q) + b, values and gradients (float64)."""
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
            for shape in ((5, 4, 6), (5, 3, 6), (6,), (1,))]                # keys, q, w, b
    keys, q, w, b = args
    ref = torch.tanh(keys[:, None] + q[:, :, None]) @ w + b                 # (5, 3, 4)
    out = additive_scores(keys, q, w, b, rows_per_chunk)
    assert out.shape == (5, 3, 4) and torch.allclose(out, ref)
    up = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad((out * up).sum(), args), torch.autograd.grad((ref * up).sum(), args)):
        assert torch.allclose(a, r)
    assert torch.autograd.gradcheck(lambda *a: additive_scores(*a, rows_per_chunk), args)


def test_region_encoder_and_heads_shapes():
    enc = RegionEncoder(feat_dim=8, num_classes=C, rnn_size=H, class_emb_size=4, loc_emb_size=4,
                        drop_prob=0.0, stride=8, image_size=64)
    props = torch.tensor([[[0, 0, 10, 10, 1, 0.9], [5, 5, 30, 30, 2, 0.8]]]).float()
    f = enc(torch.randn(1, 8, 8, 8), props, torch.tensor([[True, False]]))
    assert f.fc.shape == (1, H) and f.grid.shape == (1, 64, H) and f.regions.shape == (1, 2, H)
    assert torch.all(f.regions[0, 1] == 0)                     # padding region zeroed
    heads = SlotHeads(rnn_size=H, fine_class=FG_CLASS, num_classes=C, drop_prob=0.0)
    pl, fl = heads(torch.randn(2, H), torch.randn(2, H), torch.tensor([2, 4]))
    assert pl.shape == (2, 2) and fl.shape == (2, len(FG_CLASS))
    assert torch.isinf(fl[0, [0, 1, 5, 6, 7]]).all() and torch.isfinite(fl[0, 2:5]).all()
    assert "fine_mask" in dict(heads.named_buffers()) and "fine_mask" not in dict(heads.named_parameters())


@pytest.mark.parametrize("name,channels,stride", [("tiny", 32 + 8, 8), ("res18", 512, 32), ("vgg16", 512, 16)])
def test_backbones(name, channels, stride):
    net = Backbone(name, pretrained=False, finetune=False, tiny_channels=32)
    out = net(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, channels, 64 // stride, 64 // stride) and net.out_channels == channels
    if name == "tiny":                                  # odd sizes: the colour skip still lines up
        assert net(torch.randn(1, 3, 71, 53)).shape == (1, channels, 9, 7)
    else:
        assert not net.trainable and not any(p.requires_grad for p in net.parameters())


def test_backbone_fixed_block_and_frozen_bn():
    from torchvision.ops import FrozenBatchNorm2d
    net = Backbone("res18", pretrained=False, finetune=True, fixed_block=2)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    trainable = [i for i, blk in enumerate(net.body) if any(p.requires_grad for p in blk.parameters())]
    assert trainable == [3, 4]


def test_step_output_is_a_distribution():
    dec = tiny_decoder()
    f, _, mask = features(dec)
    wl, rl, state = dec.step(torch.zeros(3, dtype=torch.long), f, dec.init_state(f))
    assert wl.shape == (3, V) and rl.shape == (3, 5)
    total = torch.logsumexp(torch.cat([wl, rl], -1), -1)
    assert torch.allclose(total, torch.zeros(3), atol=1e-5)
    assert (rl[-1, -2:] < -1e3).all()                          # padded regions masked


def test_teacher_forcing_loss_and_targets():
    dec = tiny_decoder()
    f, props, mask = features(dec, B=2)
    words = torch.tensor([[[5, 6, 7, 0], [8, 0, 0, 0]], [[9, 9, 0, 0], [4, 5, 6, 7]]])
    vis = torch.zeros_like(words)
    vis[0, 0, 1] = int(props[0, 2, 4])
    pos = torch.zeros(2, 2, 4, 5, dtype=torch.bool)
    pos[0, 0, 1, 2] = True
    batch = {"words": words, "vis_cls": vis, "pos": pos, "plural": torch.zeros_like(words),
             "fine": torch.where(vis > 0, torch.tensor(FG_CLASS).tolist().index(int(vis[0, 0, 1])), -1)}
    dec.train()
    out = dec(f, batch)
    assert out["word_logp"].shape == (4, 5, V) and out["region_logp"].shape == (4, 5, 5)
    sums = xe_loss_sums(dec, out, batch)
    assert int(sums["n_tokens"]) == 4 + 2 + 3 + 5 and int(sums["n_visual"]) == 1
    loss = combine(sums, (1, 1, 1), float(sums["n_tokens"]), float(sums["n_visual"]))
    loss["loss"].backward()
    assert dec.pointer.score.weight.grad is not None and dec.heads.fine[0].weight.grad is not None
    target, m = caption_targets(torch.tensor([[3, 0, 0]]), 4)
    assert target.tolist() == [[3, 0, 0, 0]] and m.tolist() == [[True, True, False, False]]


def _teacher_batch(props):
    words = torch.tensor([[[5, 6, 7, 0], [8, 0, 0, 0]], [[9, 9, 0, 0], [4, 5, 6, 7]]])
    vis = torch.zeros_like(words)
    vis[0, 0, 1], vis[1, 1, 2] = int(props[0, 2, 4]), int(props[1, 0, 4])
    pos = torch.zeros(2, 2, 4, 5, dtype=torch.bool)
    pos[0, 0, 1, 2] = pos[1, 1, 2, 0] = pos[1, 1, 2, 3] = True
    fine = [FG_CLASS.index(int(c)) if c > 0 else -1 for c in vis.flatten().tolist()]
    return {"words": words, "vis_cls": vis, "pos": pos, "plural": (pos.sum(-1) > 1).long(),
            "fine": torch.tensor(fine).view_as(words)}


# the options a converted model of the original uses (misc/original_checkpoint.py)
ORIGINAL_CORE = dict(roi_align="original", sentinel_cell="previous", sentinel_key="own", extra_word_logit=True,
                     fine_head="glove")


@pytest.mark.parametrize("pointer,grouping,train,original", [(True, True, True, False), (True, False, False, False),
                                                             (False, False, True, False), (True, False, True, True)])
def test_all_steps_at_once_equals_the_per_step_reference(pointer, grouping, train, original):
    """NBTDecoder.forward computes the vocabulary softmax, sentinel and pointer once over all
    steps; CaptionDecoder.forward (the straightforward loop over step()) is the reference. Same
    log-probs, losses and gradients - in training with dropout too (the same masks are drawn),
    and with the original's core (its sentinel reads the previous cell state)."""
    from nbt.misc.decoder_base import CaptionDecoder
    torch.manual_seed(0)
    dec = NBTDecoder(vocab_size=V, num_classes=C, fine_class=FG_CLASS, feat_dim=8, rnn_size=H,
                     input_encoding_size=8, att_hid_size=8, class_emb_size=4, loc_emb_size=4,
                     drop_prob=0.3, stride=8, image_size=64, pointer=pointer, region_grouping=grouping,
                     **(ORIGINAL_CORE if original else {})).train(train)
    conv = torch.randn(2, 8, 8, 8)
    _, props, mask = features(dec, B=2)
    batch = _teacher_batch(props)
    if not pointer:
        batch["vis_cls"] = torch.zeros_like(batch["vis_cls"])
    results = []
    for forward in (NBTDecoder.forward, CaptionDecoder.forward):
        dec.zero_grad()
        torch.manual_seed(5)
        f = dec.encode(conv, props, mask)
        out = forward(dec, f, batch)
        sums = xe_loss_sums(dec, out, batch)
        combine(sums, (1, 1, 1), float(sums["n_tokens"]), max(float(sums["n_visual"]), 1.0))["loss"].backward()
        grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
        results.append((out, sums, grads))
    (fast, fast_sums, fast_grads), (ref, ref_sums, ref_grads) = results
    assert fast["word_logp"].shape == ref["word_logp"].shape == (4, 5, V)
    assert fast["region_logp"].shape == ref["region_logp"].shape == (4, 5, 5 if pointer else 0)
    for k in ("word_logp", "region_logp", "h_lang"):
        assert torch.allclose(fast[k], ref[k], atol=1e-5), k
    for k in ("words", "plural", "fine"):
        assert torch.allclose(fast_sums[k], ref_sums[k], atol=1e-5), k
    assert fast_grads.keys() == ref_grads.keys() and ("pointer.score.weight" in ref_grads) == pointer
    assert ("sentinel_key.weight" in ref_grads) == original
    for n, g in ref_grads.items():
        assert torch.allclose(fast_grads[n], g, atol=1e-5), n


@pytest.mark.parametrize("grouping", [False, True])
def test_beam_one_equals_greedy(grouping):
    dec = tiny_decoder(region_grouping=grouping)
    f, _, _ = features(dec, B=4)
    if grouping:
        assert f.groups.logits.shape == (4, 5, 5) and not f.groups.valid[-1, -1].any()
    g = greedy(dec, f, max_len=12)
    b = beam_search(dec, f, beam_size=1, max_len=12)
    for x, y in zip(g, b):
        assert x.tokens == y.tokens and x.plural == y.plural and x.fine == y.fine


def test_beam_batched_equals_one_image_at_a_time():
    dec = tiny_decoder()
    f, props, mask = features(dec, B=3)
    together = beam_search(dec, f, beam_size=3, max_len=10)
    for i in range(3):
        fi = f.rows(torch.tensor([i]))
        alone = beam_search(dec, fi, beam_size=3, max_len=10)[0]
        assert alone.tokens == together[i].tokens
        assert abs(alone.score - together[i].score) < 1e-4


@pytest.mark.parametrize("name", ["nbt", "showtell", "aoanet"])
def test_step_on_live_rows_equals_step_on_expanded_features(name):
    """Decoding steps only some rows, with features kept per image (img = image of each row)."""
    from nbt.misc.baselines import build_baseline
    if name == "nbt":
        dec = tiny_decoder()
    else:
        torch.manual_seed(0)
        dec = build_baseline(name, vocab_size=V, num_classes=C, fine_class=FG_CLASS, feat_dim=8, rnn_size=H,
                             input_encoding_size=8, att_hid_size=8, class_emb_size=4, loc_emb_size=4,
                             drop_prob=0.0, stride=8, image_size=64, heads=2, refine_layers=1).eval()
    f, _, _ = features(dec, B=3)
    img = torch.tensor([0, 0, 2, 2, 2])                           # image 1 has no live rows
    fx = f.expand(3)
    rows = torch.tensor([0, 2, 6, 7, 8])
    init = dec.init_state(fx)
    state = type(init)(*(torch.randn(len(img), s.shape[1], generator=torch.Generator().manual_seed(i))
                         for i, s in enumerate(init)))
    tok = torch.tensor([0, 3, 5, 0, V + 1])
    with torch.no_grad():
        a = dec.step(tok, fx.rows(rows), state)
        b = dec.step(tok, f, state, img=img)
    for x, y in zip(a[:2] + tuple(a[2]), b[:2] + tuple(b[2])):
        assert torch.allclose(x, y, atol=1e-5)


@pytest.mark.parametrize("cbs", [False, True])
def test_dropping_hopeless_beams_changes_nothing(cbs):
    dec = tiny_decoder()
    f, props, mask = features(dec, B=3)
    cons = select_constraints(props, mask, n_constraints=2, mode="all", score_thresh=0.0) if cbs else None
    fast = beam_search(dec, f, beam_size=3, max_len=12, constraints=cons)
    full = beam_search(dec, f, beam_size=3, max_len=12, constraints=cons, drop_hopeless=False)
    for x, y in zip(fast, full):
        assert (x.tokens, x.plural, x.fine) == (y.tokens, y.plural, y.fine) and abs(x.score - y.score) < 1e-5


def walk(dec, f, b: int, choose, tokens=None, max_len: int = 12):
    """Image b decoded one step at a time by the decoder's step() alone: at each step the token
    `choose(logp)` picks (or the next of `tokens`), a pointer masks its region and feeds its class
    (V + class) -> (tokens without EOS, summed log-probability, EOS included)."""
    fb = f.rows(torch.tensor([b]))
    state, tok = dec.init_state(fb), torch.zeros(1, dtype=torch.long)
    pointed = torch.zeros(1, fb.num_regions, dtype=torch.bool)
    out, score = [], 0.0
    for t in range(max_len):
        with torch.no_grad():
            w, r, state = dec.step(tok, fb, state, pointed)
        logp = torch.cat([w, r], -1)[0]
        nxt = choose(logp) if tokens is None else (tokens + [0])[t]
        score += float(logp[nxt])
        if nxt == 0:
            break
        out.append(nxt)
        if nxt >= V:
            pointed[0, nxt - V] = True
            tok = torch.tensor([V + int(fb.region_cls[0, nxt - V])])
        else:
            tok = torch.tensor([nxt])
    return out, score


def eos_reachable(dec):
    """Pointing attractive (word biases -5) and EOS likely enough that captions end in a few steps."""
    with torch.no_grad():
        dec.logit.bias.fill_(-5.0)
        dec.logit.bias[0] = 1.0
    return dec


def test_greedy_is_the_argmax_at_every_step():
    dec = eos_reachable(tiny_decoder())
    f, _, _ = features(dec, B=4)
    for b, d in enumerate(greedy(dec, f, max_len=12)):
        tokens, score = walk(dec, f, b, lambda lp: int(lp.argmax()))
        assert d.tokens == tokens and d.score == pytest.approx(score, abs=1e-4)
    assert any(t >= V for d in greedy(dec, f, max_len=12) for t in d.tokens)       # pointers among them


def test_no_region_pointed_twice_and_beam_not_worse():
    dec = tiny_decoder()
    with torch.no_grad():                                      # make pointing attractive
        dec.logit.bias.fill_(-5.0)
    f, _, _ = features(dec, B=3)
    for decoded in (greedy(dec, f, max_len=12), *(beam_search(dec, f, beam_size=K, max_len=12) for K in (1, 3))):
        for d in decoded:
            regions = [t - V for t in d.tokens if t >= V]
            assert regions and len(regions) == len(set(regions))
    # captions that end: a beam of 3 finds captions at least as likely as greedy's, better for some,
    # and the score it reports is its caption's log-probability
    dec = eos_reachable(dec)
    f, _, _ = features(dec, B=4)
    g = greedy(dec, f, max_len=12)
    beam = beam_search(dec, f, beam_size=3, max_len=12)
    one = beam_search(dec, f, beam_size=1, max_len=12)
    assert [d.score for d in one] == pytest.approx([d.score for d in g], abs=1e-4)
    for b, (x, y) in enumerate(zip(beam, g)):
        assert x.score >= y.score - 1e-5
        assert x.score == pytest.approx(walk(dec, f, b, None, tokens=x.tokens)[1], abs=1e-4)
    assert sum(x.score > y.score + 0.1 for x, y in zip(beam, g)) >= 2


def test_cbs_satisfies_constraints_and_leaves_inputs_alone():
    dec = tiny_decoder()
    f, props, mask = features(dec, B=3)
    before = props.clone()
    cons = select_constraints(props, mask, n_constraints=2, mode="all", score_thresh=0.0)
    assert torch.equal(props, before)
    out = beam_search(dec, f, beam_size=2, max_len=12, constraints=cons)
    for b, d in enumerate(out):
        mentioned = {t - V for t in d.tokens if t >= V}
        assert set(cons[b].tolist()) <= mentioned and d.satisfied == 2
    single = []
    for b in range(3):
        fi = f.rows(torch.tensor([b]))
        single.append(beam_search(dec, fi, beam_size=2, max_len=12, constraints=cons[b:b + 1])[0].tokens)
    assert single == [d.tokens for d in out]


def test_cbs_modes_and_missing_constraints():
    props = torch.tensor([[[0, 0, 5, 5, 1, 0.95], [0, 0, 6, 6, 1, 0.9], [1, 1, 9, 9, 2, 0.85],
                           [2, 2, 8, 8, 3, 0.3]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    assert select_constraints(props, mask, n_constraints=3, mode="all", score_thresh=0.5).tolist() == [[0, 1, 2]]
    assert select_constraints(props, mask, n_constraints=3, mode="unique", score_thresh=0.5).tolist() == [[0, 2, -1]]
    assert select_constraints(props, mask, n_constraints=2, mode="novel", novel_classes=[2],
                              score_thresh=0.5).tolist() == [[2, -1]]
    # a detection scoring exactly the threshold is kept; one below it is not
    assert select_constraints(props, mask, n_constraints=3, mode="unique", score_thresh=0.3).tolist() == [[0, 2, 3]]
    assert select_constraints(props, mask, n_constraints=3, mode="unique", score_thresh=0.31).tolist() == [[0, 2, -1]]


def test_cbs_constraints_follow_scores_not_row_order_and_skip_padding():
    """Detections in no particular order (as an h5 from another tool may hold them), a padded row
    scoring highest, two images at once."""
    props = torch.tensor([[[0, 0, 5, 5, 2, 0.6], [0, 0, 6, 6, 1, 0.95], [1, 1, 9, 9, 1, 0.9],
                           [2, 2, 8, 8, 3, 0.85], [3, 3, 7, 7, 1, 0.7], [4, 4, 9, 9, 2, 0.2]],
                          [[0, 0, 5, 5, 3, 0.3], [0, 0, 6, 6, 4, 0.99], [1, 1, 9, 9, 4, 0.4],
                           [2, 2, 8, 8, 1, 0.1], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]])
    mask = torch.tensor([[True, False, True, True, True, True], [True, True, True, True, False, False]])
    before = props.clone()

    def pick(n, mode, thresh, novel=None):
        return select_constraints(props, mask, n_constraints=n, mode=mode, score_thresh=thresh,
                                  novel_classes=novel).tolist()
    assert pick(3, "all", 0.0) == [[2, 3, 4], [1, 2, 0]]
    assert pick(3, "unique", 0.5) == [[2, 3, 0], [1, -1, -1]]
    assert pick(3, "unique", 0.65) == [[2, 3, -1], [1, -1, -1]]
    assert pick(3, "unique", 0.05) == [[2, 3, 0], [1, 0, 3]]
    assert pick(2, "novel", 0.5, [2, 1]) == [[2, 0], [-1, -1]]
    assert pick(2, "novel", 0.05, [1, 3]) == [[2, 3], [0, 3]]
    assert torch.equal(props, before)


def test_cbs_unsatisfiable_returns_best_partial_with_warning():
    dec = tiny_decoder()
    f, props, mask = features(dec, B=1, R=5)
    cons = torch.tensor([[0, 1, 2]])
    with pytest.warns(UserWarning, match="no caption meets all"):
        out = beam_search(dec, f, beam_size=2, max_len=2, constraints=cons)
    assert out[0].satisfied == 2 and out[0].n_constraints == 3


@pytest.mark.parametrize("name", ["showtell", "aoanet"])
def test_baselines_shapes_decode_and_never_point(name):
    from nbt.misc.baselines import build_baseline
    torch.manual_seed(0)
    dec = build_baseline(name, vocab_size=V, num_classes=C, fine_class=FG_CLASS, feat_dim=8, rnn_size=H,
                         input_encoding_size=8, att_hid_size=8, class_emb_size=4, loc_emb_size=4,
                         drop_prob=0.0, stride=8, image_size=64, heads=2, refine_layers=2).eval()
    _, props, mask = features(tiny_decoder(), B=2)
    f = dec.encode(torch.randn(2, 8, 8, 8), props, mask)
    wl, rl, _ = dec.step(torch.zeros(2, dtype=torch.long), f, dec.init_state(f))
    assert wl.shape == (2, V) and rl.shape == (2, 0)
    assert torch.allclose(wl.exp().sum(-1), torch.ones(2), atol=1e-5)
    outs = beam_search(dec, f, beam_size=2, max_len=8)
    assert all(t < V for d in outs for t in d.tokens)
    g = greedy(dec, f, max_len=8)
    assert [d.tokens for d in g] == [d.tokens for d in beam_search(dec, f, beam_size=1, max_len=8)]
    words = torch.tensor([[[3, 4, 0]], [[5, 0, 0]]])
    dec.train()
    out = dec(f, {"words": words, "vis_cls": torch.zeros_like(words)})
    sums = xe_loss_sums(dec, out, {"words": words, "vis_cls": torch.zeros_like(words),
                                   "pos": torch.zeros(2, 1, 3, 5, dtype=torch.bool)})
    assert int(sums["n_tokens"]) == 5 and torch.isfinite(sums["words"])
    sums["words"].backward()
