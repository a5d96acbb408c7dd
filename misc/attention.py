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

    def scores(self, query: torch.Tensor, keys_proj: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(keys_proj + self.query_proj(query)[:, None, :])   # (B, N, A)
        return self.score(hidden).squeeze(-1)                          # (B, N)

    def forward(self, query: torch.Tensor, values: torch.Tensor, keys_proj: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q), values (B, N, D), mask (B, N) True = valid -> (B, D)."""
        s = self.scores(query, keys_proj)
        if mask is not None:
            s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        w = torch.softmax(s, dim=-1)
        if mask is not None:
            w = w * mask.any(-1, keepdim=True)                        # an image with no regions
        return torch.bmm(w.unsqueeze(1), values).squeeze(1)            # (B, D)
