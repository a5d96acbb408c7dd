"""Cross-entropy losses of NBT: language (words and pointers) + plural + fine-grained.

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
    sums.update(plural=zero, fine=zero)
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
        plural_lp, fine_lp = model.slot_logp(out["h_lang"][rows, steps][tok], f.regions[rows[tok], reg], cls)
        plural_t = torch.cat([batch["plural"].reshape(N, L), vis.new_zeros(N, 1)], 1)[:, :T][rows, steps][tok]
        fine_t = torch.cat([batch["fine"].reshape(N, L), vis.new_zeros(N, 1)], 1)[:, :T][rows, steps][tok]
        sums["plural"] = -(plural_lp.gather(1, plural_t[:, None]).squeeze(1) * weight).sum()
        sums["fine"] = -(fine_lp.gather(1, fine_t[:, None]).squeeze(1) * weight).sum()
    sums["words"] = lm
    return sums


def loss_weights(opt) -> tuple[float, float, float, float]:
    """The weights of the words, plural, fine-grained and grouping losses (the original's option
    names: lm_, bn_, fg_loss_weight)."""
    return opt.lm_loss_weight, opt.bn_loss_weight, opt.fg_loss_weight, opt.group_loss_weight


def combine(sums: dict, weights: tuple[float, ...], n_tokens: float, n_visual: float) -> dict:
    """The weighted total and each loss, normalised: words per token, the others per visual word
    (the grouping sum runs over region pairs). weights: words, plural, fine and (optional) grouping."""
    words = sums["words"] / max(n_tokens, 1.0)
    plural = sums["plural"] / max(n_visual, 1.0)
    fine = sums["fine"] / max(n_visual, 1.0)
    grouping = sums.get("grouping", words * 0) / max(n_visual, 1.0)
    w_grouping = weights[3] if len(weights) > 3 else 0.0
    total = weights[0] * words + weights[1] * plural + weights[2] * fine + w_grouping * grouping
    return {"loss": total, "words": words.detach(), "plural": plural.detach(), "fine": fine.detach(),
            "grouping": grouping.detach()}
