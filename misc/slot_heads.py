"""Slot filling heads (NBT's plural and fine-grained classifiers): given the pointed region and the language state, decide
singular / plural and the fine-grained word, restricted to the region's class.

Both read x = [region ; h_lang] through Linear(2H, H) + ReLU + dropout, then
    plural   Linear(H, 2)
    fine     linear: Linear(H, F), a logit per fine-grained word;
             glove (the original's): Linear(H, E), scored by its dot product with fixed E-d vectors
             of the F words (`fine_vectors`, GloVe in the original; seeded random ones when none are
             given)."""
from __future__ import annotations

import torch
from torch import nn


class SlotHeads(nn.Module):
    def __init__(self, *, rnn_size: int, fine_class: list[int], num_classes: int, drop_prob: float,
                 fine_head: str = "linear", vector_size: int = 300, fine_vectors: torch.Tensor | None = None):
        super().__init__()
        self.plural = nn.Sequential(nn.Linear(2 * rnn_size, rnn_size), nn.ReLU(), nn.Dropout(drop_prob),
                                    nn.Linear(rnn_size, 2))
        out = {"linear": len(fine_class), "glove": vector_size}[fine_head]
        self.fine = nn.Sequential(nn.Linear(2 * rnn_size, rnn_size), nn.ReLU(), nn.Dropout(drop_prob),
                                  nn.Linear(rnn_size, out))
        if fine_head == "glove":              # (F, E) fixed word vectors
            vectors = torch.randn(len(fine_class), vector_size) if fine_vectors is None else fine_vectors
            self.register_buffer("fine_vectors", vectors.float().clone())
        else:
            self.fine_vectors = None
        # (C + 1, F): which fine-grained words a class may use. A buffer, not a Parameter (the
        # original's byte Parameter cannot be loaded by current PyTorch).
        mask = torch.zeros(num_classes + 1, len(fine_class), dtype=torch.bool)
        mask[torch.tensor(fine_class), torch.arange(len(fine_class))] = True
        self.register_buffer("fine_mask", mask, persistent=False)

    def forward(self, region: torch.Tensor, h_lang: torch.Tensor, cls: torch.Tensor):
        """region (N, H) feature of the pointed region(s), h_lang (N, H), cls (N,) -> log-probs
        plural (N, 2), fine (N, F) with words of other classes at -inf."""
        x = torch.cat([region, h_lang], -1)
        plural = torch.log_softmax(self.plural(x).float(), -1)
        logits = self.fine(x)                                          # (N, F), or (N, E) with glove
        if self.fine_vectors is not None:
            logits = logits @ self.fine_vectors.to(logits.dtype).t()     # (N, F)
        logits = logits.float().masked_fill(~self.fine_mask[cls], float("-inf"))
        fine = torch.log_softmax(logits, -1)
        return plural, fine
