"""RoIAlign over the CNN conv map, with torchvision.ops.roi_align (no compiled extension of ours).

The original used a custom `RoIAlignAvg(1, 1, 1/stride)`: 2 x 2 bilinear samples placed at the box
*corners*, averaged. Here torchvision's `roi_align` samples a `pool_size` grid of bin centres
(`sampling_ratio` points per bin, `aligned=True`: half-pixel corrected) and the bins are averaged,
so a box's feature averages the inside of the box rather than its four corners: more faithful to
the box content, and numerically different from the original by design.
"""
from __future__ import annotations

import torch
from torchvision.ops import roi_align


def pool_regions(conv: torch.Tensor, boxes: torch.Tensor, stride: float, pool_size: int = 2,
                 sampling_ratio: int = 2) -> torch.Tensor:
    """conv (B, D, h, w), boxes (B, R, 4) in input-image pixels -> (B, R, D) mean-pooled features."""
    B, R, _ = boxes.shape
    if R == 0:
        return conv.new_zeros(B, 0, conv.shape[1])
    batch_idx = torch.arange(B, device=boxes.device, dtype=boxes.dtype).repeat_interleave(R)
    rois = torch.cat([batch_idx[:, None], boxes.reshape(B * R, 4).to(conv.dtype)], 1)   # (B*R, 5)
    pooled = roi_align(conv, rois.to(conv.dtype), output_size=pool_size, spatial_scale=1.0 / stride,
                       sampling_ratio=sampling_ratio, aligned=True)                  # (B*R, D, p, p)
    return pooled.mean(dim=(2, 3)).view(B, R, -1)
