"""Additive (Bahdanau) attention, the kind every NBT attention uses."""
from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    """score_i = w^T tanh(K_i + W_q q); keys are projected once per image (`project`)."""

    def __init__(self, *, query_size: int, key_size: int, hidden: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, hidden)
        self.query_proj = nn.Linear(query_size, hidden)
        self.score = nn.Linear(hidden, 1)

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)                                     # (B, N, A)

    def scores(self, query: torch.Tensor, keys_proj: torch.Tensor, img: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q), keys_proj (B, N, A) -> (B, N); with img (n,), keys_proj[img] for n queries."""
        q = self.query_proj(query)[:, None, :]
        if img is not None and not torch.is_grad_enabled():          # decoding: the gathered copy is
            hidden = keys_proj[img].add_(q).tanh_()                  # the only (n, N, A) buffer
        else:
            hidden = ((keys_proj if img is None else keys_proj[img]) + q).tanh_()   # (B, N, A)
        return self.score(hidden).squeeze(-1)                          # (B, N)

    def forward(self, query: torch.Tensor, values: torch.Tensor, keys_proj: torch.Tensor,
                mask: torch.Tensor | None = None, img: torch.Tensor | None = None,
                count: bool = False):
        """query (B, Q), values (B, N, D), mask (B, N) True = valid -> (B, D).
        With img (n,): n queries, query i looking at image img[i] of the per-image values / keys
        / mask (decoding: the live beams of a batch; img sorted) -> (n, D).
        count: also return sum_i sigmoid(score_i) over valid i, (B, 1) - how many items match
        the query, which the softmax average cannot tell ("a ring" vs "two rings")."""
        if img is not None and mask is not None:
            mask = mask[img]
        s = self.scores(query, keys_proj, img)
        n = None
        if count:
            n = torch.sigmoid(s.float())
            n = (n if mask is None else n * mask).sum(-1, keepdim=True).to(s.dtype)     # (B, 1)
        if mask is not None:
            s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        w = torch.softmax(s, dim=-1)
        if mask is not None:
            w = w * mask.any(-1, keepdim=True)                        # an image with no regions
        if img is None:
            out = torch.bmm(w.unsqueeze(1), values).squeeze(1)         # (B, D)
        else:
            out = weighted_sum_by_image(w, values, img)
        return (out, n) if count else out


def weighted_sum_by_image(w: torch.Tensor, values: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """w (n, N) weights of n queries, values (B, N, D), img (n,) sorted -> (n, D), without
    copying each image's values once per query: the queries of an image become the rows of one
    (B, M, N) @ (B, N, D) batched product (M = most queries of one image)."""
    B = values.shape[0]
    counts = torch.bincount(img, minlength=B)                          # (B,)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(img), device=img.device) - first[img]       # (n,) rank within its image
    packed = w.new_zeros(B, int(counts.max()) if len(img) else 0, w.shape[1])   # (B, M, N)
    packed[img, pos] = w
    return torch.bmm(packed.to(values.dtype), values)[img, pos]       # (n, D)
