"""Greedy, beam and constrained beam search, batched over images, beams and constraint states.

One search serves all three: greedy is beam 1 without constraints; constrained beam search (CBS)
keeps `beam_size` beams for each subset of satisfied constraints (a finite-state machine with 2^n
states for n constraints). A constraint is "point at proposal j"; an image with fewer constraints
starts in the state where the missing ones count as satisfied. Each beam carries its own pointer mask (no region
is pointed twice). Plural and fine-grained choices are made greedily for each pointed slot (not
part of the beam score, as in the original).

Output tokens: w < V is a word (0 = EOS), V + r points at proposal r. One point-and-fill step
(`point_and_fill`) serves greedy, beam search and SCST's sampling.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from nbt.misc.decoder_base import feedback_tokens, map_state
from nbt.misc.encoded import Encoded

NEG_INF = float("-inf")


def pointer_regions(decoder, f: Encoded) -> int:
    """R, the regions a search can point at: f's regions if the decoder has a pointer, else 0
    (updown_plain attends over regions but never points; its step returns (N, 0) region log-probs)."""
    return f.num_regions if getattr(decoder, "has_pointer", False) else 0


@dataclass
class Decoded:
    tokens: list[int]                     # words (< V) and pointers (V + r), EOS stripped
    plural: list[int]                     # per token: 1 plural (pointers only; else 0)
    fine: list[int]                       # per token: fine-grained index (pointers only; else -1)
    score: float
    satisfied: int = 0                    # constraints met
    n_constraints: int = 0
    extra: dict = field(default_factory=dict)


def select_constraints(proposals: torch.Tensor, prop_mask: torch.Tensor, *, n_constraints: int, mode: str,
                       score_thresh: float, novel_classes: list[int] | None = None) -> torch.Tensor:
    """(B, R, 6) proposals -> (B, n_constraints) proposal indices to mention, highest scores first,
    -1 where none (inputs never modified). all: the top detections; unique: one per class, scoring
    at least score_thresh; novel: as unique, among the held-out classes only."""
    B, R, _ = proposals.shape
    out = torch.full((B, n_constraints), -1, dtype=torch.long)
    for b in range(B):
        valid = prop_mask[b].nonzero().flatten().tolist()
        order = sorted(valid, key=lambda r: -float(proposals[b, r, 5]))
        if mode == "all":
            chosen = order[:n_constraints]
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
            chosen = chosen[:n_constraints]
        else:
            raise ValueError(f"unknown cbs_mode '{mode}' (all, unique, novel)")
        out[b, :len(chosen)] = torch.tensor(chosen, dtype=torch.long)
    return out


class SlotChoice(NamedTuple):
    """What the slot heads chose for the rows that just pointed at a region."""
    plural: torch.Tensor           # (N,) 1 = plural form (pointer rows only; else 0)
    fine: torch.Tensor             # (N,) fine-grained word index (pointer rows only; else -1)
    logp: torch.Tensor             # (N,) log-probability of the two choices (0 for other rows)
    pointed: torch.Tensor          # (N, R) regions pointed so far, this step's included


def point_and_fill(decoder, f: Encoded, state, tok: torch.Tensor, is_region: torch.Tensor,
                   pointed: torch.Tensor, *, img: torch.Tensor | None = None, sample: bool = False) -> SlotChoice:
    """For rows whose token points at region r = tok - V (is_region): the plural and fine-grained
    choice (argmax, or sampled for SCST, differentiable log-probs) and r marked as pointed. f per
    row, or per image with img (N,) the image of each row. Nothing is modified in place."""
    N = tok.shape[0]
    plural = torch.zeros(N, dtype=torch.long, device=tok.device)
    fine = torch.full((N,), -1, dtype=torch.long, device=tok.device)
    logp = torch.zeros(N, device=tok.device)
    if not bool(is_region.any()):
        return SlotChoice(plural, fine, logp, pointed)
    rows = is_region.nonzero().flatten()                                # (n,)
    r = tok[rows] - decoder.vocab_size                                  # (n,) pointed regions
    at = rows if img is None else img[rows]
    pl, fl = decoder.slot_logp(state.out[rows], f.regions[at, r], f.region_cls[at, r])   # (n, 2), (n, F)
    pick = (lambda lp: torch.multinomial(lp.detach().exp(), 1).squeeze(1)) if sample else (lambda lp: lp.argmax(-1))
    ps, fs = pick(pl), pick(fl)
    chosen = pl.gather(1, ps[:, None]).squeeze(1) + fl.gather(1, fs[:, None]).squeeze(1)   # (n,)
    return SlotChoice(plural.index_put((rows,), ps), fine.index_put((rows,), fs),
                      logp.to(chosen.dtype).index_put((rows,), chosen),
                      pointed.index_put((rows, r), torch.ones_like(r, dtype=torch.bool)))


def step_live(decoder, f: Encoded, tokens_in, state, pointed, live: torch.Tensor, img: torch.Tensor):
    """Step the decoder on rows `live` only (f per image, img (n,) the image of each live row);
    the other rows keep their state. -> word_logp (n, V), region_logp (n, R), the full state."""
    w_lp, r_lp, live_state = decoder.step(tokens_in[live], f, map_state(state, lambda s: s[live]),
                                          None if pointed is None else pointed[live], img=img)
    merged = type(state)(*(s.index_copy(0, live, ls.to(s.dtype)) for s, ls in zip(state, live_state)))
    return w_lp, r_lp, merged


@dataclass
class Beams:
    """The search's rows, laid out (image, constraint state, beam): N = B * n_states * beam_size.
    Features stay per image; `img` gives each row's image."""
    img: torch.Tensor              # (N,) image of each row
    state: tuple                   # the decoder state, (N, ...) each
    tokens_in: torch.Tensor        # (N,) next input token
    pointed: torch.Tensor          # (N, R) regions already pointed at
    finished: torch.Tensor         # (N,) EOS written
    seqs: torch.Tensor             # (N, t) output tokens so far
    plural: torch.Tensor           # (N, t) slot choices so far
    fine: torch.Tensor             # (N, t)
    scores: torch.Tensor           # (B, n_states, beam_size) log-probability, -inf = empty

    def reorder(self, src: torch.Tensor) -> None:
        """Row i takes the history of row src[i] (the beams chosen this step)."""
        self.state = map_state(self.state, lambda s: s[src])
        for name in ("pointed", "finished", "seqs", "plural", "fine"):
            setattr(self, name, getattr(self, name)[src])


class Constraints(NamedTuple):
    """CBS: constraint j is met by pointing at proposal cons[b, j]; state s = the set of met ones."""
    tokens: torch.Tensor           # (B, n) the pointer token V + r of each constraint, -1 = none
    bits: torch.Tensor             # (n_states,) 0 .. 2^n - 1

    @property
    def n(self) -> int:
        return self.tokens.shape[1]


def start_beams(decoder, f: Encoded, beam_size: int, constraints: torch.Tensor | None) -> tuple[Beams, Constraints]:
    B, R, V, device = f.batch, pointer_regions(decoder, f), decoder.vocab_size, f.device
    n_cons = 0 if constraints is None else constraints.shape[1]
    n_states = 1 << n_cons
    N = B * n_states * beam_size
    cons = (constraints if n_cons else torch.zeros(B, 0, dtype=torch.long)).to(device)   # (B, n)
    scores = torch.full((B, n_states, beam_size), NEG_INF, device=device)
    absent = ((cons < 0).long() << torch.arange(n_cons, device=device)).sum(1)   # missing ones count as met
    scores[torch.arange(B, device=device), absent, 0] = 0.0
    empty = torch.zeros(N, 0, dtype=torch.long, device=device)
    beams = Beams(img=torch.arange(B, device=device).repeat_interleave(n_states * beam_size),
                  state=map_state(decoder.init_state(f), lambda s: s.repeat_interleave(n_states * beam_size, 0)),
                  tokens_in=torch.zeros(N, dtype=torch.long, device=device),
                  pointed=torch.zeros(N, R, dtype=torch.bool, device=device),
                  finished=torch.zeros(N, dtype=torch.bool, device=device),
                  seqs=empty, plural=empty, fine=empty, scores=scores)
    tokens = torch.where(cons >= 0, V + cons, torch.full_like(cons, -1))
    return beams, Constraints(tokens, torch.arange(n_states, device=device))


def select_next(cand: torch.Tensor, cons: Constraints, beam_size: int):
    """cand (B, n_states, beam, V + R) scores of every continuation -> for each (image, state)
    the best beam_size continuations: scores, source state, source beam, token (B, n_states, beam).
    A row stays in its state with any token but a constraint's pointer, or moves from state
    s - {j} into s by pointing at constraint j."""
    B, NS, K, W = cand.shape                                            # K = beam_size
    same = cand.clone() if cons.n else cand
    for j in range(cons.n):                                             # pointing at j leaves the state
        tok = cons.tokens[:, j]
        has = tok >= 0
        same[has, :, :, tok[has]] = NEG_INF
    top_v, top_i = same.view(B, NS, K * W).topk(min(K, K * W), dim=-1)  # (B, NS, K)
    options = [(top_v, cons.bits[None, :, None].expand_as(top_i), top_i // W, top_i % W)]
    for j in range(cons.n):
        has_bit = (cons.bits & (1 << j)) > 0                            # (NS,)
        src = cons.bits ^ (1 << j)
        tok = cons.tokens[:, j].clamp(min=0)                            # (B,)
        v = cand[:, src].gather(3, tok.view(B, 1, 1, 1).expand(B, NS, K, 1)).squeeze(3)   # (B, NS, K)
        v = v.masked_fill(~has_bit[None, :, None] | (cons.tokens[:, j] < 0)[:, None, None], NEG_INF)
        options.append((v, src[None, :, None].expand(B, NS, K), torch.arange(K, device=cand.device).expand(B, NS, K),
                        tok.view(B, 1, 1).expand(B, NS, K)))
    if len(options) == 1:
        return options[0]
    v, st, bm, tk = (torch.cat(x, -1) for x in zip(*options))            # (B, NS, K * (1 + n))
    top_v, pick = v.topk(K, dim=-1)
    return top_v, st.gather(2, pick), bm.gather(2, pick), tk.gather(2, pick)


@torch.no_grad()
def beam_search(decoder, f: Encoded, *, beam_size: int = 1, max_len: int = 20,
                constraints: torch.Tensor | None = None, length_penalty: float = 0.0,
                drop_hopeless: bool = True, first_finished: bool = False) -> list[Decoded]:
    """f: encoded features of B images. constraints (B, n) proposal indices or -1.

    Each step runs the decoder on the live rows only (finite score, not finished). Without a
    length penalty scores only fall, so a row scoring below its image's best finished caption in
    the final state can never win and is dropped (`drop_hopeless`; the result is the same as
    without dropping it).

    first_finished (the original's beam search, without constraints): a beam that ends leaves the
    search at once (its place goes to the next live continuation), and each image's caption is the
    first one to end (at the same step, the higher-scored), or at max_len the best one then."""
    if first_finished:
        if constraints is not None:
            raise ValueError("beam_first_finished reproduces the original's plain beam search; not with cbs")
        return _first_finished_search(decoder, f, beam_size=beam_size, max_len=max_len)
    V, R = decoder.vocab_size, pointer_regions(decoder, f)
    if constraints is not None and not R:
        raise ValueError(f"constrained beam search points at regions: {type(decoder).__name__} has no pointer")
    beams, cons = start_beams(decoder, f, beam_size, constraints)
    B, NS, K = beams.scores.shape
    N = B * NS * K
    region_cls = f.region_cls[beams.img] if R else None                 # (N, R) for the feedback tokens
    for t in range(max_len + 1):
        live = (torch.isfinite(beams.scores.view(N)) & ~beams.finished).nonzero().flatten()   # (n,) sorted
        w_lp, r_lp, beams.state = step_live(decoder, f, beams.tokens_in, beams.state, beams.pointed if R else None,
                                            live, beams.img[live])
        logp = torch.full((N, V + R), NEG_INF, device=f.device)
        logp[live] = torch.cat([w_lp, r_lp], -1).float()                # (N, V + R)
        if t == max_len:                                                # out of length: must end
            logp[:, 1:] = NEG_INF
        logp[beams.finished, 0] = 0.0
        cand = (beams.scores.view(N, 1) + logp).view(B, NS, K, V + R)
        beams.scores, src_state, src_beam, tok = select_next(cand, cons, K)
        if N > B:                                                       # beam 1: each row is its own source
            img = torch.arange(B, device=f.device)[:, None, None]
            beams.reorder(((img * NS + src_state) * K + src_beam).view(N))
        append_step(decoder, f, beams, tok.reshape(N), region_cls)
        if drop_hopeless and not length_penalty:
            done = beams.finished.view(B, NS, K)[:, NS - 1]               # (B, K) final state
            best_done = torch.where(done, beams.scores[:, NS - 1], NEG_INF).max(1).values   # (B,)
            hopeless = (beams.scores < best_done[:, None, None]) & ~beams.finished.view(B, NS, K)
            beams.scores = beams.scores.masked_fill(hopeless, NEG_INF)
        if bool((beams.finished | ~torch.isfinite(beams.scores.view(N))).all()):
            break
    return best_captions(beams, constraints, length_penalty=length_penalty)


def _first_finished_search(decoder, f: Encoded, *, beam_size: int, max_len: int) -> list[Decoded]:
    """beam_search(first_finished=True): the original's CaptionModel.beam_search kept each finished
    beam's score as a view of its slot and then set the slot to -1000, so every finished score
    reads -1000 and its stable sort returns the first beam to finish."""
    V, R = decoder.vocab_size, pointer_regions(decoder, f)
    beams, cons = start_beams(decoder, f, beam_size, None)
    B, NS, K = beams.scores.shape
    N = B * K
    region_cls = f.region_cls[beams.img] if R else None                 # (N, R)
    out: list[Decoded | None] = [None] * B
    for t in range(max_len):
        live = (torch.isfinite(beams.scores.view(N)) & ~beams.finished).nonzero().flatten()   # (n,)
        w_lp, r_lp, beams.state = step_live(decoder, f, beams.tokens_in, beams.state, beams.pointed if R else None,
                                            live, beams.img[live])
        logp = torch.full((N, V + R), NEG_INF, device=f.device)          # finished rows: retired
        logp[live] = torch.cat([w_lp, r_lp], -1).float()                # (N, V + R)
        cand = (beams.scores.view(N, 1) + logp).view(B, NS, K, V + R)
        beams.scores, src_state, src_beam, tok = select_next(cand, cons, K)
        beams.reorder(((torch.arange(B, device=f.device)[:, None, None] * NS + src_state) * K + src_beam).view(N))
        was = beams.finished | ~torch.isfinite(beams.scores.view(N))
        append_step(decoder, f, beams, tok.reshape(N), region_cls)
        ended = (beams.finished | (t == max_len - 1)) & ~was             # (N,) in slot order per image
        for n in ended.nonzero().flatten().tolist():
            b = n // K
            if out[b] is None:
                L = t + 1 - int(beams.seqs[n, t] == 0)
                out[b] = Decoded(tokens=beams.seqs[n, :L].tolist(), plural=beams.plural[n, :L].tolist(),
                                 fine=beams.fine[n, :L].tolist(), score=float(beams.scores.view(N)[n]))
        if all(d is not None for d in out):
            break
    return out


def append_step(decoder, f: Encoded, beams: Beams, tok: torch.Tensor, region_cls: torch.Tensor | None) -> None:
    """Write this step's tokens (N,) into the reordered beams: slot choices for pointers, EOS
    after the end, the next inputs."""
    was_finished = beams.finished
    is_region = (tok >= decoder.vocab_size) & ~was_finished
    slots = point_and_fill(decoder, f, beams.state, tok, is_region, beams.pointed, img=beams.img)
    tok = torch.where(was_finished, torch.zeros_like(tok), tok)
    beams.pointed = slots.pointed
    beams.seqs = torch.cat([beams.seqs, tok[:, None]], 1)
    beams.plural = torch.cat([beams.plural, slots.plural[:, None]], 1)
    beams.fine = torch.cat([beams.fine, slots.fine[:, None]], 1)
    beams.finished = was_finished | (tok == 0)
    beams.tokens_in = feedback_tokens(tok, is_region, region_cls, decoder.vocab_size)


def best_captions(beams: Beams, constraints: torch.Tensor | None, *, length_penalty: float) -> list[Decoded]:
    """Each image's best caption in the final state (every constraint met), else, with a warning,
    the best one of the state meeting the most constraints."""
    B, NS, K = beams.scores.shape
    seqs = beams.seqs
    lengths = ((seqs != 0).cumsum(1) == torch.arange(1, seqs.shape[1] + 1, device=seqs.device)).sum(1)   # (N,)
    final = beams.scores.view(-1).clone()
    if length_penalty:
        final = final / lengths.clamp(min=1).float() ** length_penalty
    final = final.view(B, NS, K)
    n_met = torch.tensor([bin(s).count("1") for s in range(NS)], device=seqs.device)   # (NS,)
    n_cons = constraints.shape[1] if constraints is not None else 0
    out = []
    for b in range(B):
        absent = int((constraints[b] < 0).sum()) if n_cons else 0
        state = NS - 1
        if not torch.isfinite(final[b, state]).any():
            state = int(torch.where(torch.isfinite(final[b]).any(-1), n_met, -1).argmax())
            warnings.warn(f"constrained beam search: no caption meets all {n_cons - absent} constraints of "
                          f"image {b}; returning the best one meeting {int(n_met[state])} of {n_cons}")
        n = (b * NS + state) * K + int(final[b, state].argmax())
        L = int(lengths[n])
        out.append(Decoded(tokens=seqs[n, :L].tolist(), plural=beams.plural[n, :L].tolist(),
                           fine=beams.fine[n, :L].tolist(), score=float(beams.scores.view(-1)[n]),
                           satisfied=int(n_met[state]) - absent, n_constraints=n_cons - absent))
    return out


@torch.no_grad()
def greedy(decoder, f: Encoded, *, max_len: int = 20, sample: bool = False, temperature: float = 1.0) -> list[Decoded]:
    """Plain step-by-step argmax (or multinomial sampling) over [words ; regions]; the reference
    that beam search with beam 1 must reproduce."""
    B, V, R, device = f.batch, decoder.vocab_size, pointer_regions(decoder, f), f.device
    state = decoder.init_state(f)
    tokens_in = torch.zeros(B, dtype=torch.long, device=device)
    pointed = torch.zeros(B, R, dtype=torch.bool, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out = [Decoded([], [], [], 0.0) for _ in range(B)]
    for t in range(max_len):
        live = (~done).nonzero().flatten()                                # (n,) rows still writing
        word_lp, region_lp, state = step_live(decoder, f, tokens_in, state, pointed if R else None, live, live)
        logp = torch.zeros(B, V + R, device=word_lp.device)
        logp[live] = torch.cat([word_lp, region_lp], -1).float()          # done rows: never read
        tok = torch.multinomial(torch.softmax(logp / temperature, -1), 1).squeeze(1) if sample else logp.argmax(-1)
        lp = logp.gather(1, tok[:, None]).squeeze(1)
        is_region = (tok >= V) & ~done
        slots = point_and_fill(decoder, f, state, tok, is_region, pointed)
        pointed = slots.pointed
        for b in (~done).nonzero().flatten().tolist():
            out[b].score += float(lp[b])
            if int(tok[b]) != 0:
                out[b].tokens.append(int(tok[b]))
                out[b].plural.append(int(slots.plural[b]))
                out[b].fine.append(int(slots.fine[b]))
        done = done | (tok == 0)
        if bool(done.all()):
            break
        tokens_in = feedback_tokens(tok, is_region, f.region_cls if R else None, V)
    return out
