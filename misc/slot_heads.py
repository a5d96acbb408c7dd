"""Slot filling heads (NBT's plural and fine-grained classifiers): given the pointed region and the language state, decide
singular / plural and the fine-grained word, restricted to the region's class."""
from __future__ import annotations

import torch
from torch import nn


class SlotHeads(nn.Module):
    def __init__(self, *, rnn_size: int, fine_class: list[int], num_classes: int, drop_prob: float):
        super().__init__()
        self.plural = nn.Sequential(nn.Linear(2 * rnn_size, rnn_size), nn.ReLU(), nn.Dropout(drop_prob),
                                    nn.Linear(rnn_size, 2))
        self.fine = nn.Sequential(nn.Linear(2 * rnn_size, rnn_size), nn.ReLU(), nn.Dropout(drop_prob),
                                  nn.Linear(rnn_size, len(fine_class)))
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
        logits = self.fine(x).float().masked_fill(~self.fine_mask[cls], float("-inf"))
        fine = torch.log_softmax(logits, -1)
        return plural, fine
