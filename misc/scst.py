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

import numpy as np
import torch

from nbt.misc.decoder_base import feedback_tokens
from nbt.misc.decoding import greedy, pointed_slot_logp
from nbt.misc.io import read_json
from nbt.misc.regions import expand_features
from nbt.misc.cider import CiderD


class SelfCritical:
    def __init__(self, bundle, opt):
        self.b, self.opt = bundle, opt
        self.vocab = bundle.vocab
        self.unknown = self.vocab.size                      # reference-only id for out-of-vocabulary words
        words = dict(self.vocab.word_to_ix)
        words["\x00unknown"] = self.unknown
        self.cider = CiderD(read_json(opt.cached_tokens), words)
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

    def render(self, tokens: torch.Tensor, plural: torch.Tensor, fine: torch.Tensor, f: dict) -> np.ndarray:
        """(N, T) model tokens -> (N, T') vocabulary ids of the filled captions."""
        V = self.vocab.size
        fg_words = self.vocab.classes.fg_words
        out = []
        toks, pl, fn = tokens.tolist(), plural.tolist(), fine.tolist()
        for n, seq in enumerate(toks):
            ids = []
            for t, tok in enumerate(seq):
                if tok == 0:
                    break
                if tok < V:
                    ids.append(tok)
                    continue
                base = fg_words[fn[n][t]] if fn[n][t] >= 0 else self.vocab.classes.names[0]
                word = self.vocab.plural(base) if pl[n][t] else base
                ids += [self.vocab.encode(w) for w in word.split()]
            out.append(ids)
        L = max([len(x) for x in out] + [1])
        arr = np.zeros((len(out), L), np.int64)
        for i, x in enumerate(out):
            arr[i, :len(x)] = x
        return arr

    def rewards(self, arr: np.ndarray, rows: list[int]) -> np.ndarray:
        return self.cider.score_ids(arr, rows, self.refs)

    # -- the loss -------------------------------------------------------------------------------
    def loss(self, decoder, f: dict, rows: list[int]) -> dict:
        n = max(1, self.opt.train_sample_n)
        fx = expand_features(f, n)
        sample = sample_with_logprobs(decoder, fx, max_len=self.opt.seq_length)
        keys = [r for r in rows for _ in range(n)]
        reward = self.rewards(self.render(sample["tokens"], sample["plural"], sample["fine"], fx), keys)
        if self.opt.scst_baseline == "mean" and n > 1:
            r = reward.reshape(-1, n)
            baseline = ((r.sum(1, keepdims=True) - r) / (n - 1)).reshape(-1)
        else:
            was_training = decoder.training
            decoder.eval()
            with torch.no_grad():
                g = greedy(decoder, {k: (v.detach() if torch.is_tensor(v) else v) for k, v in f.items()},
                           max_len=self.opt.seq_length)
            decoder.train(was_training)
            T = max([len(d.tokens) for d in g] + [1])
            gt = torch.zeros(len(g), T, dtype=torch.long)
            gp = torch.zeros(len(g), T, dtype=torch.long)
            gf = torch.full((len(g), T), -1, dtype=torch.long)
            for i, d in enumerate(g):
                gt[i, :len(d.tokens)] = torch.tensor(d.tokens, dtype=torch.long)
                gp[i, :len(d.plural)] = torch.tensor(d.plural, dtype=torch.long)
                gf[i, :len(d.fine)] = torch.tensor(d.fine, dtype=torch.long)
            baseline = np.repeat(self.rewards(self.render(gt, gp, gf, f), rows), n)
        advantage = torch.as_tensor(reward - baseline, dtype=torch.float32, device=sample["logp"].device)
        mask = sample["mask"]
        loss = -(advantage[:, None] * sample["logp"] * mask).sum() / mask.sum().clamp(min=1)
        return {"loss": loss, "reward": float(reward.mean()), "baseline": float(np.mean(baseline))}


def sample_with_logprobs(decoder, f: dict, *, max_len: int) -> dict:
    """Multinomial sampling over [words ; regions] (and the plural / fine-grained heads for a
    pointed region) with the log-probability of every decision, differentiable."""
    N = f["batch"]
    V = decoder.vocab_size
    R = f["region_mask"].shape[1]
    device = f["region_mask"].device
    state = decoder.init_state(f)
    tokens_in = torch.zeros(N, dtype=torch.long, device=device)
    pointed = torch.zeros(N, R, dtype=torch.bool, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    toks, pls, fns, logps, masks = [], [], [], [], []
    for _ in range(max_len + 1):
        word_lp, region_lp, state = decoder.step(tokens_in, f, state, pointed if R else None)
        logp = torch.cat([word_lp, region_lp], -1).float()
        tok = torch.multinomial(logp.detach().exp(), 1).squeeze(1)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        is_region = (tok >= V) & ~done
        r = (tok - V).clamp(min=0)
        plural = torch.zeros(N, dtype=torch.long, device=device)
        fine = torch.full((N,), -1, dtype=torch.long, device=device)
        if is_region.any():
            rows = is_region.nonzero().flatten()
            pl, fl = pointed_slot_logp(decoder, f, state, rows, r)
            ps = torch.multinomial(pl.detach().exp(), 1).squeeze(1)
            fs = torch.multinomial(fl.detach().exp(), 1).squeeze(1)
            extra = torch.zeros(N, device=device, dtype=lp.dtype)
            extra = extra.index_put((rows,), pl.gather(1, ps[:, None]).squeeze(1) + fl.gather(1, fs[:, None]).squeeze(1))
            lp = lp + extra
            plural = plural.index_put((rows,), ps)
            fine = fine.index_put((rows,), fs)
            pointed = pointed.clone()
            pointed[rows, r[rows]] = True
        live = ~done
        tok = torch.where(done, torch.zeros_like(tok), tok)
        toks.append(tok)
        pls.append(plural)
        fns.append(fine)
        logps.append(lp)
        masks.append(live.float())
        done = done | (tok == 0)
        if bool(done.all()):
            break
        tokens_in = feedback_tokens(tok, is_region, f, V)
    return {"tokens": torch.stack(toks, 1), "plural": torch.stack(pls, 1), "fine": torch.stack(fns, 1),
            "logp": torch.stack(logps, 1), "mask": torch.stack(masks, 1)}
