"""Every search (greedy, beam, the original's first-finished beam, CBS, SCST's sampling) on every
captioning model (att_model), tiny random weights, built as `main.py` builds them."""

import pytest
import torch

from conftest import ROOT, world_options
from nbt.misc.captioner import build_captioner
from nbt.misc.decoding import beam_search, greedy, pointer_regions, select_constraints
from nbt.misc.scst import sample_with_logprobs

V, C, R, B = 40, 4, 6, 3
MODELS = ["topdown", "att2in2", "updown_plain", "showtell", "aoanet"]
POINTS = {"topdown": True, "att2in2": True, "updown_plain": False, "showtell": False, "aoanet": False}


def tiny_batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(B, R, 2, generator=g) * 40
    wh = torch.rand(B, R, 2, generator=g) * 20 + 4
    cls = torch.randint(1, C + 1, (B, R, 1), generator=g).float()
    props = torch.cat([xy, xy + wh, cls, torch.rand(B, R, 1, generator=g)], -1)      # (B, R, 6)
    mask = torch.ones(B, R, dtype=torch.bool)
    mask[-1, -2:] = False
    return {"images": torch.rand(B, 3, 64, 64, generator=g), "proposals": props, "prop_mask": mask}


def build(name: str):
    opt = world_options(ROOT, att_model=name, aoa_heads=2, aoa_refine_layers=1, rnn_size=16,
                        input_encoding_size=8, att_hid_size=8, class_emb_size=8, loc_emb_size=8)
    torch.manual_seed(0)
    m = build_captioner(opt, vocab_size=V, num_classes=C, fine_class=[1, 1, 2, 3, 4, 4]).eval()
    with torch.no_grad():
        if POINTS[name]:
            m.decoder.logit.bias.fill_(-3.0)         # make pointing likely, so pointer paths run
        f = m.encode(tiny_batch())
    return name, m.decoder, f


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return build(request.param)


@pytest.fixture(scope="module", params=["topdown", "att2in2", "updown_plain"])
def additive_model(request):
    """The models with additive attention (misc/attention.py)."""
    return build(request.param)


def check(name, decoded, R_points):
    assert len(decoded) == B
    for d in decoded:
        assert len(d.tokens) == len(d.plural) == len(d.fine) and 0 not in d.tokens
        assert all(0 < t < V + R_points for t in d.tokens)
        regions = [t - V for t in d.tokens if t >= V]
        assert len(regions) == len(set(regions))                        # none pointed twice


@pytest.mark.parametrize("search", ["greedy", "beam1", "beam3", "first_finished", "cbs", "sample"])
def test_every_search_runs_on_every_model(model, search):
    name, dec, f = model
    Rp = pointer_regions(dec, f)
    assert Rp == (R if POINTS[name] else 0)
    with torch.no_grad():
        if search == "greedy":
            out = greedy(dec, f, max_len=8)
            assert [d.tokens for d in out] == [d.tokens for d in beam_search(dec, f, beam_size=1, max_len=8)]
        elif search == "beam1":
            out = beam_search(dec, f, beam_size=1, max_len=8)
        elif search == "beam3":
            out = beam_search(dec, f, beam_size=3, max_len=8)
        elif search == "first_finished":
            out = beam_search(dec, f, beam_size=3, max_len=8, first_finished=True)
        elif search == "cbs":
            batch = tiny_batch()
            cons = select_constraints(batch["proposals"], batch["prop_mask"], n_constraints=2, mode="all",
                                      score_thresh=0.0)
            if not POINTS[name]:
                with pytest.raises(ValueError, match="has no pointer"):
                    beam_search(dec, f, beam_size=2, max_len=8, constraints=cons)
                return
            out = beam_search(dec, f, beam_size=2, max_len=8, constraints=cons)
            assert all(d.satisfied == 2 for d in out)
        else:
            torch.manual_seed(0)
            s = sample_with_logprobs(dec, f, max_len=8)
            assert s.tokens.shape[0] == B and bool((s.tokens < V + Rp).all())
            return
    check(name, out, Rp)
    if POINTS[name] and search in ("greedy", "beam3"):
        assert any(t >= V for d in out for t in d.tokens)                 # the pointer path ran


def reference_scores(keys_proj, q, img, w, b):
    """decode_scores' maths in one piece: all rows' keys gathered, then the score layer."""
    return (keys_proj[img] + q[:, None]).tanh() @ w + b


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("cache", [1, 1 << 20])
def test_chunked_decoding_scores_give_the_reference_captions(additive_model, monkeypatch, beam, cache):
    """The searches' attention and pointer scores go in cache-sized chunks of one image's rows
    (cache 1: one row per chunk; 1 MB: all rows of an image): the same captions, slot choices and
    scores as the one-piece formula."""
    import nbt.misc.attention
    import nbt.misc.model
    name, dec, f = additive_model
    monkeypatch.setattr(nbt.misc.attention, "CACHE_BYTES", cache)
    with torch.no_grad():
        fast = beam_search(dec, f, beam_size=beam, max_len=10)
        fast_greedy = greedy(dec, f, max_len=10)
    monkeypatch.setattr(nbt.misc.attention, "decode_scores", reference_scores)
    monkeypatch.setattr(nbt.misc.model, "decode_scores", reference_scores)
    with torch.no_grad():
        ref = beam_search(dec, f, beam_size=beam, max_len=10)
        ref_greedy = greedy(dec, f, max_len=10)
    for x, y in zip(fast + fast_greedy, ref + ref_greedy):
        assert (x.tokens, x.plural, x.fine) == (y.tokens, y.plural, y.fine)
        assert abs(x.score - y.score) < 1e-4
    if POINTS[name]:
        assert any(t >= V for d in fast for t in d.tokens)                  # with pointer choices


@pytest.mark.parametrize("beam", [1, 3])
def test_fc_gates_computed_once_give_the_reference_captions(additive_model, beam):
    """Decoding adds the attention LSTM's fc gates computed once per image (fc_gates) instead of
    feeding [fc ; word] to the LSTM cell at every step: the same cell, the same captions."""
    import dataclasses
    name, dec, f = additive_model
    assert (f.fc_gates is None) == (name == "att2in2")                     # att2in2 has no attention LSTM
    if f.fc_gates is not None:
        g = torch.Generator().manual_seed(3)
        state = type(dec.init_state(f))(*(torch.randn(B, 16, generator=g) for _ in range(4)))
        emb = torch.randn(B, 8, generator=g)
        with torch.no_grad():
            h, c = dec.att_cell(f.fc_gates, emb, state)
            h_ref, c_ref = dec.att_lstm(torch.cat([f.fc, emb], -1), (state.h_att, state.c_att))
        assert torch.allclose(h, h_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)
    with torch.no_grad():
        fast = beam_search(dec, f, beam_size=beam, max_len=10) + greedy(dec, f, max_len=10)
        ref_f = dataclasses.replace(f, fc_gates=None)
        ref = beam_search(dec, ref_f, beam_size=beam, max_len=10) + greedy(dec, ref_f, max_len=10)
    for x, y in zip(fast, ref):
        assert (x.tokens, x.plural, x.fine) == (y.tokens, y.plural, y.fine) and abs(x.score - y.score) < 1e-4
