"""Greedy, beam and constrained beam search, batched over images, beams and constraint states.

One search serves all three: greedy is beam 1 without constraints; constrained beam search (CBS)
keeps `beam_size` beams for each subset of satisfied constraints (a finite-state machine with
2^k states). A constraint is "point at proposal j"; an image with fewer constraints starts in the
state where the missing ones count as satisfied. Each beam carries its own pointer mask (no region
is pointed twice). Plural and fine-grained choices are made greedily for each pointed slot (not
part of the beam score, as in the original).

Output tokens: w < V is a word (0 = EOS), V + r points at proposal r.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from nbt.misc.decoder_base import feedback_tokens

NEG_INF = float("-inf")


@dataclass
class Decoded:
    tokens: list[int]                     # words (< V) and pointers (V + r), EOS stripped
    plural: list[int]                     # per token: 1 plural (pointers only; else 0)
    fine: list[int]                       # per token: fine-grained index (pointers only; else -1)
    score: float
    satisfied: int = 0                    # constraints met
    n_constraints: int = 0
    extra: dict = field(default_factory=dict)


def select_constraints(proposals: torch.Tensor, prop_mask: torch.Tensor, *, k: int, mode: str,
                       score_thresh: float, novel_classes: list[int] | None = None) -> torch.Tensor:
    """(B, R, 6) proposals -> (B, k) proposal indices to mention, -1 where none (never in place)."""
    B, R, _ = proposals.shape
    out = torch.full((B, k), -1, dtype=torch.long)
    for b in range(B):
        valid = prop_mask[b].nonzero().flatten().tolist()
        order = sorted(valid, key=lambda r: -float(proposals[b, r, 5]))
        if mode == "all":
            chosen = order[:k]
        elif mode in ("unique", "novel"):
            chosen, seen = [], set()
            for r in order:
                cls = int(proposals[b, r, 4])
                if float(proposals[b, r, 5]) < score_thresh or cls in seen:
                    continue
                if mode == "novel" and cls not in set(novel_classes or []):
                    continue
                seen.add(cls)
                chosen.append(r)
            chosen = chosen[:k]
        else:
            raise ValueError(f"unknown cbs_mode '{mode}' (all, unique, novel)")
        out[b, :len(chosen)] = torch.tensor(chosen, dtype=torch.long)
    return out


def pointed_slot_logp(decoder, f: dict, state: tuple, rows: torch.Tensor, region: torch.Tensor,
                      img: torch.Tensor | None = None):
    """Plural and fine-grained log-probs for rows that just pointed at `region[rows]`
    (f per row, or per image with img giving each row's image)."""
    at = rows if img is None else img[rows]
    return decoder.slot_logp(f, decoder.output_state(state)[rows], f["regions"][at, region[rows]],
                             f["region_cls"][at, region[rows]])


def step_live(decoder, f: dict, tokens_in, state: tuple, pointed, live: torch.Tensor, img: torch.Tensor):
    """Step the decoder on rows `live` only (f per image, img (n,) the image of each live row);
    the other rows keep their state. -> word_logp (n, V), region_logp (n, R), the full state."""
    w_lp, r_lp, live_state = decoder.step(tokens_in[live], f, tuple(s[live] for s in state),
                                          None if pointed is None else pointed[live], img=img)
    return w_lp, r_lp, tuple(s.index_copy(0, live, ls.to(s.dtype)) for s, ls in zip(state, live_state))


@torch.no_grad()
def beam_search(decoder, f: dict, *, beam_size: int = 1, max_len: int = 20,
                constraints: torch.Tensor | None = None, length_penalty: float = 0.0,
                drop_hopeless: bool = True) -> list[Decoded]:
    """f: encoded features of B images. constraints (B, k) proposal indices or -1.

    Rows are laid out (image, constraint state, beam). Features stay per image; each step runs
    the decoder on the live rows only (finite score, not finished). Without a length penalty
    scores only fall, so a row scoring below its image's best finished caption in the final state
    can never win and is dropped (`drop_hopeless`; the result is the same as without dropping it)."""
    B, K = f["batch"], beam_size
    V = decoder.vocab_size
    R = f["region_mask"].shape[1]
    k = 0 if constraints is None else constraints.shape[1]
    NS = 1 << k
    N = B * NS * K
    device = f["region_mask"].device
    img = torch.arange(B, device=device).repeat_interleave(NS * K)      # (N,) image of each row
    state = tuple(s.repeat_interleave(NS * K, 0) for s in decoder.init_state(f))
    region_cls = f["region_cls"][img]                                   # (N, R) for the feedback tokens
    tokens_in = torch.zeros(N, dtype=torch.long, device=device)
    pointed = torch.zeros(N, R, dtype=torch.bool, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    seqs = torch.zeros(N, 0, dtype=torch.long, device=device)
    plural_h = torch.zeros(N, 0, dtype=torch.long, device=device)
    fine_h = torch.zeros(N, 0, dtype=torch.long, device=device)
    scores = torch.full((B, NS, K), NEG_INF, device=device)
    if k:
        cons = constraints.to(device)                                     # (B, k)
        absent = (cons < 0).long() << torch.arange(k, device=device)      # missing ones count as met
        start = absent.sum(1)
        scores[torch.arange(B, device=device), start, 0] = 0.0
        cons_tok = torch.where(cons >= 0, V + cons, torch.full_like(cons, -1))   # (B, k)
    else:
        scores[:, 0, 0] = 0.0
    bits = torch.arange(NS, device=device)                                # constraint states

    for t in range(max_len + 1):
        live = (torch.isfinite(scores.view(N)) & ~finished).nonzero().flatten()   # (n,) sorted
        w_lp, r_lp, state = step_live(decoder, f, tokens_in, state, pointed if R else None, live, img[live])
        logp = torch.full((N, V + R), NEG_INF, device=device)
        logp[live] = torch.cat([w_lp, r_lp], -1).float()                  # (N, V + R)
        if t == max_len:                                                   # out of length: must end
            logp[:, 1:] = NEG_INF
        logp[finished, 0] = 0.0
        cand = (scores.view(N, 1) + logp).view(B, NS, K, V + R)
        # 1) stay in the same state: any token but a constraint's pointer
        same = cand.clone()
        if k:
            for j in range(k):
                tok = cons_tok[:, j]
                has = tok >= 0
                same[has, :, :, tok[has]] = NEG_INF
        flat_same = same.view(B, NS, K * (V + R))
        top_v, top_i = flat_same.topk(min(K, flat_same.shape[-1]), dim=-1)  # (B, NS, K)
        src_beam = top_i // (V + R)
        tok_sel = top_i % (V + R)
        src_state = bits[None, :, None].expand_as(src_beam)
        if k:
            # 2) move into state s from s without bit j by pointing at constraint j
            trans_v, trans_src, trans_tok = [], [], []
            for j in range(k):
                bit = 1 << j
                has_bit = (bits & bit) > 0                                  # (NS,)
                src = bits ^ bit
                tok = cons_tok[:, j].clamp(min=0)                           # (B,)
                v = cand[:, src].gather(3, tok.view(B, 1, 1, 1).expand(B, NS, K, 1)).squeeze(3)  # (B, NS, K)
                v = v.masked_fill(~has_bit[None, :, None] | (cons_tok[:, j] < 0)[:, None, None], NEG_INF)
                trans_v.append(v)
                trans_src.append(src[None, :, None].expand(B, NS, K))
                trans_tok.append(tok.view(B, 1, 1).expand(B, NS, K))
            all_v = torch.cat([top_v] + trans_v, -1)                        # (B, NS, K + k*K)
            all_state = torch.cat([src_state] + trans_src, -1)
            all_beam = torch.cat([src_beam] + [torch.arange(K, device=device).expand(B, NS, K)] * k, -1)
            all_tok = torch.cat([tok_sel] + trans_tok, -1)
            top_v, pick = all_v.topk(K, dim=-1)
            src_state = all_state.gather(2, pick)
            src_beam = all_beam.gather(2, pick)
            tok_sel = all_tok.gather(2, pick)
        src_flat = (torch.arange(B, device=device)[:, None, None] * NS * K + src_state * K + src_beam).view(N)
        tok = tok_sel.reshape(N)
        scores = top_v
        # reorder the beams' histories and states, then append the step
        state = tuple(s[src_flat] for s in state)
        pointed, finished, seqs = pointed[src_flat], finished[src_flat], seqs[src_flat]
        plural_h, fine_h = plural_h[src_flat], fine_h[src_flat]
        was_finished = finished.clone()
        is_region = (tok >= V) & ~was_finished
        r = (tok - V).clamp(min=0)
        plural_t = torch.zeros(N, dtype=torch.long, device=device)
        fine_t = torch.full((N,), -1, dtype=torch.long, device=device)
        if is_region.any():
            rows = is_region.nonzero().flatten()
            pl, fl = pointed_slot_logp(decoder, f, state, rows, r, img=img)
            plural_t[rows] = pl.argmax(-1)
            fine_t[rows] = fl.argmax(-1)
            pointed[rows, r[rows]] = True
        tok = torch.where(was_finished, torch.zeros_like(tok), tok)
        seqs = torch.cat([seqs, tok[:, None]], 1)
        plural_h = torch.cat([plural_h, plural_t[:, None]], 1)
        fine_h = torch.cat([fine_h, fine_t[:, None]], 1)
        finished = was_finished | (tok == 0)
        tokens_in = feedback_tokens(tok, is_region, {"region_cls": region_cls}, V)
        if drop_hopeless and not length_penalty:
            done = finished.view(B, NS, K)[:, NS - 1]                       # (B, K) final state
            best_done = torch.where(done, scores[:, NS - 1], NEG_INF).max(1).values   # (B,)
            hopeless = (scores < best_done[:, None, None]) & ~finished.view(B, NS, K)
            scores = scores.masked_fill(hopeless, NEG_INF)
        if bool((finished | ~torch.isfinite(scores.view(N))).all()):
            break
    return _pick(seqs, plural_h, fine_h, scores, B, NS, K, k, constraints, length_penalty)


def _pick(seqs, plural_h, fine_h, scores, B, NS, K, k, constraints, alpha) -> list[Decoded]:
    lengths = ((seqs != 0).cumsum(1) == torch.arange(1, seqs.shape[1] + 1, device=seqs.device)).sum(1)
    final = scores.view(-1).clone()
    if alpha:
        final = final / lengths.clamp(min=1).float() ** alpha
    final = final.view(B, NS, K)
    n_bits = torch.tensor([bin(s).count("1") for s in range(NS)], device=seqs.device)
    out = []
    for b in range(B):
        full = NS - 1
        best_state = full
        if not torch.isfinite(final[b, full]).any():
            finite = torch.isfinite(final[b]).any(-1)
            best_state = int(torch.where(finite, n_bits, -1).argmax())
            n_cons = int((constraints[b] >= 0).sum()) if k else 0
            warnings.warn(f"constrained beam search: no caption meets all {n_cons} constraints of "
                          f"image {b}; returning the best one meeting {int(n_bits[best_state])} of {k}")
        kk = int(final[b, best_state].argmax())
        n = (b * NS + best_state) * K + kk
        L = int(lengths[n])
        satisfied = int(n_bits[best_state]) - (int((constraints[b] < 0).sum()) if k else 0)
        out.append(Decoded(tokens=seqs[n, :L].tolist(), plural=plural_h[n, :L].tolist(),
                           fine=fine_h[n, :L].tolist(), score=float(scores.view(-1)[n]),
                           satisfied=satisfied, n_constraints=int((constraints[b] >= 0).sum()) if k else 0))
    return out


@torch.no_grad()
def greedy(decoder, f: dict, *, max_len: int = 20, sample: bool = False, temperature: float = 1.0) -> list[Decoded]:
    """Plain step-by-step argmax (or multinomial sampling, for SCST) over [words ; regions]; the
    reference that beam search with beam 1 must reproduce."""
    B = f["batch"]
    V = decoder.vocab_size
    R = f["region_mask"].shape[1]
    state = decoder.init_state(f)
    tokens_in = torch.zeros(B, dtype=torch.long, device=f["region_mask"].device)
    pointed = torch.zeros(B, R, dtype=torch.bool, device=f["region_mask"].device)
    done = torch.zeros(B, dtype=torch.bool, device=f["region_mask"].device)
    out = [Decoded([], [], [], 0.0) for _ in range(B)]
    for t in range(max_len):
        live = (~done).nonzero().flatten()                                # (n,) rows still writing
        word_lp, region_lp, state = step_live(decoder, f, tokens_in, state, pointed if R else None, live, live)
        logp = torch.zeros(B, V + R, device=word_lp.device)
        logp[live] = torch.cat([word_lp, region_lp], -1).float()          # done rows: never read
        tok = torch.multinomial(torch.softmax(logp / temperature, -1), 1).squeeze(1) if sample else logp.argmax(-1)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        is_region = (tok >= V) & ~done
        r = (tok - V).clamp(min=0)
        plural = torch.zeros(B, dtype=torch.long, device=tok.device)
        fine = torch.full((B,), -1, dtype=torch.long, device=tok.device)
        if is_region.any():
            rows = is_region.nonzero().flatten()
            pl, fl = pointed_slot_logp(decoder, f, state, rows, r)
            plural[rows], fine[rows] = pl.argmax(-1), fl.argmax(-1)
            pointed[rows, r[rows]] = True
        for b in range(B):
            if done[b]:
                continue
            out[b].score += float(lp[b])
            if int(tok[b]) == 0:
                continue
            out[b].tokens.append(int(tok[b]))
            out[b].plural.append(int(plural[b]))
            out[b].fine.append(int(fine[b]))
        done = done | (tok == 0)
        if bool(done.all()):
            break
        tokens_in = feedback_tokens(tok, is_region, f, V)
    return out
