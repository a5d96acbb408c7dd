"""Region vectors v_i = ReLU(W [RoIAlign feature ; location ; class embedding]) of size rnn_size, as
in NBT (the location is x1 y1 x2 y2 / image size and the detection score), plus the grid (conv
cells) and global (mean) features the decoder attends over. `roi_align` chooses the RoIAlign
sampling (pooling/roi_align.py: torchvision's, or the original's).

The encoder reads a conv map (B, D, h, w) and pools the proposals itself, or `CachedRegions`:
the conv map and the pooled proposals read from prepro/prepro_features.py's cache."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nbt.misc.encoded import RegionFeatures
from nbt.pooling.roi_align import pool_regions


class CachedRegions(NamedTuple):
    """A batch of cached features: the grid and the proposals' RoIAlign features, pooled once."""
    grid: torch.Tensor          # (B, D, h, w)
    pooled: torch.Tensor        # (B, R, D)

    @property
    def shape(self) -> torch.Size:
        return self.grid.shape


class RegionEncoder(nn.Module):
    def __init__(self, *, feat_dim: int, num_classes: int, rnn_size: int, class_emb_size: int,
                 loc_emb_size: int, drop_prob: float, stride: int, image_size: int,
                 class_vectors: torch.Tensor | None = None, grid_size: int = 0, roi_align: str = "torchvision"):
        super().__init__()
        self.stride, self.image_size, self.grid_size, self.roi_align = stride, image_size, grid_size, roi_align
        self.class_emb = nn.Embedding(num_classes + 1, class_emb_size)     # row 0: padding
        if class_vectors is not None:                                      # GloVe, frozen
            self.class_emb.weight.data.copy_(class_vectors)
            self.class_emb.weight.requires_grad_(False)
        self.loc = nn.Sequential(nn.Linear(5, loc_emb_size), nn.ReLU(), nn.Dropout(drop_prob))
        self.cls_act = nn.Sequential(nn.ReLU(), nn.Dropout(drop_prob))
        self.region = nn.Sequential(nn.Linear(feat_dim + loc_emb_size + class_emb_size, rnn_size),
                                    nn.ReLU(), nn.Dropout(drop_prob))
        self.grid = nn.Sequential(nn.Linear(feat_dim, rnn_size), nn.ReLU(), nn.Dropout(drop_prob))
        self.fc = nn.Sequential(nn.Linear(feat_dim, rnn_size), nn.ReLU(), nn.Dropout(drop_prob))

    def forward(self, conv: torch.Tensor | CachedRegions, proposals: torch.Tensor,
                prop_mask: torch.Tensor) -> RegionFeatures:
        """conv (B, D, h, w) or CachedRegions; proposals (B, R, 6) x1 y1 x2 y2 class score; prop_mask (B, R).
        The attention keys are left to the decoder (it owns the attention layers)."""
        if isinstance(conv, CachedRegions):
            pooled, conv = conv.pooled.to(conv.grid.dtype), conv.grid      # (B, R, D), (B, D, h, w)
        else:
            pooled = pool_regions(conv, proposals[..., :4], self.stride, mode=self.roi_align)   # (B, R, D)
        if self.grid_size and conv.shape[-1] > self.grid_size:             # cheaper attention grid
            conv = torch.nn.functional.adaptive_avg_pool2d(conv, self.grid_size)
        grid = conv.flatten(2).transpose(1, 2)                             # (B, h*w, D)
        loc = torch.cat([proposals[..., :4] / self.image_size, proposals[..., 5:6]], -1)   # (B, R, 5)
        cls = proposals[..., 4].long().clamp(min=0) * prop_mask
        region = torch.cat([pooled, self.loc(loc.to(pooled.dtype)), self.cls_act(self.class_emb(cls))], -1)
        return RegionFeatures(fc=self.fc(grid.mean(1)),                      # (B, H)
                              grid=self.grid(grid),                          # (B, N, H)
                              regions=self.region(region) * prop_mask[..., None],   # (B, R, H)
                              region_cls=cls, region_mask=prop_mask)         # (B, R) each

    @torch.no_grad()
    def copy_class(self, novel: int, seen: int) -> None:
        """NOC: a held-out class borrows a seen class's embedding (the original's noc_word_map)."""
        self.class_emb.weight[novel] = self.class_emb.weight[seen]

