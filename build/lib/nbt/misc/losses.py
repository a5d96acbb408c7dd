"""Cross-entropy losses of NBT (reference §2.5): language + plural + fine-grained.

Returned as sums with their counts, so that the trainer can normalise by the *global* count
(gradient accumulation and DDP then give exactly the gradient of one big batch).
The visual-word term is -log sum_{i in positives} p(region i): the probability of pointing at any
positive proposal. The original used the mean of the log-probabilities (a geometric mean), which
penalises a model for not spreading its mass over every overlapping proposal.
"""
from __future__ import annotations

import torch


def caption_targets(words: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """words (N, L) -> targets (N, T) with EOS appended, and the mask of counted steps (every token
    and the first EOS)."""
    N, L = words.shape
    target = torch.cat([words, words.new_zeros(N, 1)], 1)[:, :T]
    is_end = target == 0
    before = torch.cumsum(is_end.long(), 1) - is_end.long()          # ends strictly before t
    return target, before == 0


def xe_loss_sums(model, out: dict, batch: dict) -> dict:
    words, vis, pos = batch["words"], batch["vis_cls"], batch["pos"]
    B, S, L = words.shape
    word_logp, region_logp = out["word_logp"], out["region_logp"]        # (N, T, V), (N, T, R)
    N, T, _ = word_logp.shape
    target, mask = caption_targets(words.reshape(N, L), T)
    vis_t = torch.cat([vis.reshape(N, L), vis.new_zeros(N, 1)], 1)[:, :T]
    textual = mask & (vis_t == 0)
    visual = mask & (vis_t > 0)
    lm = -(word_logp.gather(2, target[..., None]).squeeze(2) * textual).sum()
    sums = {"n_tokens": mask.sum(), "n_visual": visual.sum()}
    zero = word_logp.new_zeros(())
    sums.update(bn=zero, fg=zero)
    if visual.any():
        R = region_logp.shape[-1]
        pos_t = torch.cat([pos.reshape(N, L, R), pos.new_zeros(N, 1, R)], 1)[:, :T]   # (N, T, R)
        rows, steps = visual.nonzero(as_tuple=True)
        p = pos_t[rows, steps]                                              # (n, R)
        lp = region_logp[rows, steps].masked_fill(~p, float("-inf"))
        lm = lm - torch.logsumexp(lp, -1).sum()
        # Slot heads: each positive region on its own, weighted 1 / #positives. The original fed
        # the *mean* of the positive regions' features, while inference sees one pointed region:
        # with several positives ("three rings") the mean is a shortcut to "plural" that is absent
        # at test time.
        f = out["features"]
        tok, reg = p.nonzero(as_tuple=True)                                 # (pairs,)
        weight = 1.0 / p.sum(-1).float()[tok]
        cls = vis_t[rows, steps][tok]
        plural_lp, fine_lp = model.slot_logp(f, out["h_lang"][rows, steps][tok], f["regions"][rows[tok], reg], cls)
        plural_t = torch.cat([batch["plural"].reshape(N, L), vis.new_zeros(N, 1)], 1)[:, :T][rows, steps][tok]
        fg_t = torch.cat([batch["fg"].reshape(N, L), vis.new_zeros(N, 1)], 1)[:, :T][rows, steps][tok]
        sums["bn"] = -(plural_lp.gather(1, plural_t[:, None]).squeeze(1) * weight).sum()
        sums["fg"] = -(fine_lp.gather(1, fg_t[:, None]).squeeze(1) * weight).sum()
    sums["lm"] = lm
    return sums


def combine(sums: dict, weights: tuple[float, ...], n_tokens: float, n_visual: float) -> dict:
    """weights: language, plural, fine-grained and (optional) grouping; the grouping sum (over
    region pairs) is normalised like the slot losses, per visual word."""
    lm = sums["lm"] / max(n_tokens, 1.0)
    bn = sums["bn"] / max(n_visual, 1.0)
    fg = sums["fg"] / max(n_visual, 1.0)
    grp = sums.get("grp", lm * 0) / max(n_visual, 1.0)
    w_grp = weights[3] if len(weights) > 3 else 0.0
    total = weights[0] * lm + weights[1] * bn + weights[2] * fg + w_grp * grp
    return {"loss": total, "lm": lm.detach(), "bn": bn.detach(), "fg": fg.detach(), "grp": grp.detach()}
