"""Self-critical sequence training (Rennie et al. 2017; AoANet's recipe: XE first, then SCST).

reward = CIDEr-D(sampled caption) - baseline, with the baseline either the greedy caption
(`scst_baseline: greedy`) or the mean reward of the other samples of the same image ("new
self-critical", `scst_baseline: mean`, needs train_sample_n > 1). For NBT the reward is computed
on the *filled* caption: a pointer slot is rendered as its fine-grained word (plural when the
sampled plural head says so), exactly as at test time, and the slot decisions (region, plural,
fine-grained word) all receive the reward, like the words.

Tokens are scored as vocabulary ids on both sides; reference words outside the vocabulary become
an id no caption can produce (the original mixed two token schemes between df and reward).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from nbt.misc.cider import CiderD, read_document_frequency
from nbt.misc.decoder_base import feedback_tokens
from nbt.misc.decoding import greedy, point_and_fill, pointer_regions
from nbt.misc.encoded import Encoded
from nbt.misc.language import language_of
from nbt.misc.slot_filling import slot_word


DF_CHECK_IMAGES = 5000      # training images that check an original n-gram pickle against the dic


class SelfCritical:
    def __init__(self, bundle, opt):
        self.b, self.opt = bundle, opt
        self.vocab = bundle.vocab
        self.unknown = self.vocab.size                      # reference-only id for out-of-vocabulary words
        words = dict(self.vocab.word_to_ix)
        words["\x00unknown"] = self.unknown
        train = (bundle.captions[r] for r in bundle.rows("train")[:DF_CHECK_IMAGES])
        self.cider = CiderD(read_document_frequency(opt.cached_tokens, self.vocab.ix_to_word, train), words)
        self._refs: dict[int, np.ndarray] = {}

    # -- references and rendering ------------------------------------------------------------
    def refs(self, row: int) -> np.ndarray:
        if row not in self._refs:
            caps = [[self.vocab.word_to_ix.get(t, self.unknown) for t in c] for c in self.b.captions[row] if c]
            L = max(len(c) for c in caps)
            arr = np.zeros((len(caps), L), np.int64)
            for i, c in enumerate(caps):
                arr[i, :len(c)] = c
            self._refs[row] = arr
        return self._refs[row]

    def render(self, tokens: torch.Tensor, plural: torch.Tensor, fine: torch.Tensor,
               region_cls: torch.Tensor | None) -> np.ndarray:
        """(N, T) model tokens -> (N, T') vocabulary ids of the filled captions (slots rendered as
        at test time); region_cls (N, R) the classes of each row's regions."""
        V = self.vocab.size
        out = []
        toks, pl, fn = tokens.tolist(), plural.tolist(), fine.tolist()
        cls = region_cls.tolist() if region_cls is not None else None
        for n, seq in enumerate(toks):
            ids = []
            for t, tok in enumerate(seq):
                if tok == 0:
                    break
                if tok < V:
                    ids.append(tok)
                    continue
                word = slot_word(self.vocab, cls[n][tok - V], pl[n][t], fn[n][t])
                ids += [self.vocab.encode(w) for w in word.split()]
            if self.vocab.agreement:            # as at test time: 两个[星星] -> 两颗星星 (Language.agree)
                words = language_of(self.vocab).agree([self.vocab.word(i) for i in ids], self.vocab)
                ids = [self.vocab.encode(w) for w in words]
            out.append(ids)
        L = max([len(x) for x in out] + [1])
        arr = np.zeros((len(out), L), np.int64)
        for i, x in enumerate(out):
            arr[i, :len(x)] = x
        return arr

    def rewards(self, arr: np.ndarray, rows: list[int]) -> np.ndarray:
        return self.cider.score_ids(arr, rows, self.refs)

    # -- the loss -------------------------------------------------------------------------------
    def loss(self, decoder, f: Encoded, rows: list[int]) -> dict:
        """The self-critical loss of train_sample_n sampled captions per image, with the mean
        reward and baseline (reported, not optimised)."""
        n = max(1, self.opt.train_sample_n)
        fx = f.expand(n)
        sample = sample_with_logprobs(decoder, fx, max_len=self.opt.seq_length)
        keys = [r for r in rows for _ in range(n)]
        reward = self.rewards(self.render(sample.tokens, sample.plural, sample.fine, region_classes(fx)), keys)
        if self.opt.scst_baseline == "mean" and n > 1:
            r = reward.reshape(-1, n)
            baseline = ((r.sum(1, keepdims=True) - r) / (n - 1)).reshape(-1)
        else:
            baseline = np.repeat(self.greedy_rewards(decoder, f, rows), n)
        advantage = torch.as_tensor(reward - baseline, dtype=torch.float32, device=sample.logp.device)
        loss = -(advantage[:, None] * sample.logp * sample.mask).sum() / sample.mask.sum().clamp(min=1)
        return {"loss": loss, "reward": float(reward.mean()), "baseline": float(np.mean(baseline))}

    def greedy_rewards(self, decoder, f: Encoded, rows: list[int]) -> np.ndarray:
        """The rewards of the greedy captions (the self-critical baseline), in eval mode."""
        was_training = decoder.training
        decoder.eval()
        g = greedy(decoder, f.detach(), max_len=self.opt.seq_length)
        decoder.train(was_training)
        T = max([len(d.tokens) for d in g] + [1])
        tokens = torch.zeros(len(g), T, dtype=torch.long)
        plural = torch.zeros(len(g), T, dtype=torch.long)
        fine = torch.full((len(g), T), -1, dtype=torch.long)
        for i, d in enumerate(g):
            tokens[i, :len(d.tokens)] = torch.tensor(d.tokens, dtype=torch.long)
            plural[i, :len(d.plural)] = torch.tensor(d.plural, dtype=torch.long)
            fine[i, :len(d.fine)] = torch.tensor(d.fine, dtype=torch.long)
        return self.rewards(self.render(tokens, plural, fine, region_classes(f)), rows)


def region_classes(f: Encoded) -> torch.Tensor | None:
    return f.region_cls.cpu() if f.num_regions else None


class Sample(NamedTuple):
    tokens: torch.Tensor           # (N, T) words and pointers, 0 after the end
    plural: torch.Tensor           # (N, T) slot choices
    fine: torch.Tensor             # (N, T)
    logp: torch.Tensor             # (N, T) log-probability of each step's decisions (differentiable)
    mask: torch.Tensor             # (N, T) 1 up to and including EOS


def sample_with_logprobs(decoder, f: Encoded, *, max_len: int) -> Sample:
    """Multinomial sampling over [words ; regions] (and the plural / fine-grained heads for a
    pointed region) with the log-probability of every decision, differentiable."""
    N, V, R, device = f.batch, decoder.vocab_size, pointer_regions(decoder, f), f.device
    state = decoder.init_state(f)
    tokens_in = torch.zeros(N, dtype=torch.long, device=device)
    pointed = torch.zeros(N, R, dtype=torch.bool, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    steps = []
    for _ in range(max_len + 1):
        word_lp, region_lp, state = decoder.step(tokens_in, f, state, pointed if R else None)
        logp = torch.cat([word_lp, region_lp], -1).float()                # (N, V + R)
        tok = torch.multinomial(logp.detach().exp(), 1).squeeze(1)
        is_region = (tok >= V) & ~done
        slots = point_and_fill(decoder, f, state, tok, is_region, pointed, sample=True)
        pointed = slots.pointed
        lp = logp.gather(1, tok[:, None]).squeeze(1) + slots.logp
        live = ~done
        tok = torch.where(done, torch.zeros_like(tok), tok)
        steps.append((tok, slots.plural, slots.fine, lp, live.float()))
        done = done | (tok == 0)
        if bool(done.all()):
            break
        tokens_in = feedback_tokens(tok, is_region, f.region_cls if R else None, V)
    return Sample(*(torch.stack(x, 1) for x in zip(*steps)))
