"""RoIAlign over the CNN conv map: one pooled D-vector per box, in two samplings (no compiled
extension of ours).

`torchvision` (the default): `torchvision.ops.roi_align` with `aligned=True` (half-pixel
corrected) samples a `pool_size` x `pool_size` grid of bin centres inside the box
(`sampling_ratio` points per bin, bilinear, clamped at the map's border) and the bins are
averaged: the feature averages the inside of the box.

`original`: the original's `RoIAlignAvg(1, 1, 1/stride)` (its compiled `ROIAlignForwardCpu` with a
2 x 2 output, then `avg_pool2d(kernel 2, stride 1)`), reimplemented in PyTorch operation for
operation so that its samples are bitwise those of the C function. With s = 1/stride, a box
x1 y1 x2 y2 in pixels samples the map (h x w cells) at

    x in {x1 s,  x1 s + (x2 s - x1 s + 1)}     y in {y1 s,  y1 s + (y2 s - y1 s + 1)}

(the second point one cell past the box's end), each by bilinear interpolation from the cell
floor(.) capped at h - 2 / w - 2, so a point in the last cell extrapolates from the two cells
before it, and a point outside [0, h) x [0, w) is 0; the four samples are averaged. The C code
takes the interpolation weights in double precision (`1. - h_ratio` is a double) and rounds
the sum (its last term, float * float * float, stays a float) to float once: so does
`corner_samples`.

What torchvision's op differs in, given the same two sample points per axis (`aligned=False`,
`output_size=2`, `sampling_ratio=1` on a box widened by half a bin on each side): it clamps a
point in the last cell to the border value (no extrapolation), keeps points within one cell
outside the map (clamped) instead of zeroing them, and interpolates in float.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

ROI_ALIGN_MODES = ("torchvision", "original")


def pool_regions(conv: torch.Tensor, boxes: torch.Tensor, stride: float, pool_size: int = 2,
                 sampling_ratio: int = 2, mode: str = "torchvision") -> torch.Tensor:
    """conv (B, D, h, w), boxes (B, R, 4) in input-image pixels -> (B, R, D) pooled features."""
    B, R, _ = boxes.shape
    if R == 0:
        return conv.new_zeros(B, 0, conv.shape[1])
    batch_idx = torch.arange(B, device=boxes.device, dtype=boxes.dtype).repeat_interleave(R)
    rois = torch.cat([batch_idx[:, None], boxes.reshape(B * R, 4).to(conv.dtype)], 1)   # (B*R, 5)
    if mode == "original":
        pooled = F.avg_pool2d(corner_samples(conv, rois, 1.0 / stride), kernel_size=2, stride=1)   # (B*R, D, 1, 1)
        return pooled.view(B, R, -1)
    if mode != "torchvision":
        raise ValueError(f"unknown RoIAlign mode '{mode}' ({', '.join(ROI_ALIGN_MODES)})")
    pooled = roi_align(conv, rois.to(conv.dtype), output_size=pool_size, spatial_scale=1.0 / stride,
                       sampling_ratio=sampling_ratio, aligned=True)                  # (B*R, D, p, p)
    return pooled.mean(dim=(2, 3)).view(B, R, -1)


def corner_samples(conv: torch.Tensor, rois: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """The original's ROIAlignForwardCpu with a 2 x 2 output: conv (B, D, h, w) float32, rois
    (K, 5) [batch, x1, y1, x2, y2] -> (K, D, 2, 2) float32 samples (ph, pw) at the box's start
    and end + 1 cells (module docstring). Each float operation is the C code's, in its order."""
    conv = conv.float()
    B, D, H, W = conv.shape
    rois = rois.float()
    scale = torch.tensor(spatial_scale, dtype=torch.float32)
    start_w, start_h, end_w, end_h = (rois[:, i] * scale for i in (1, 2, 3, 4))        # (K,) each
    zero = torch.zeros(())
    size_w = torch.fmax(end_w - start_w + 1, zero)        # fmaxf(end - start + 1., 0.) (float = double here)
    size_h = torch.fmax(end_h - start_h + 1, zero)
    ys = torch.stack([start_h, size_h + start_h], 1)      # (K, 2) ph = 0, 1 (0 * bin + start = start)
    xs = torch.stack([start_w, size_w + start_w], 1)      # (K, 2) pw = 0, 1
    y0 = torch.fmin(torch.floor(ys), torch.tensor(H - 2.0)).long()     # fminf(floor(h), height - 2)
    x0 = torch.fmin(torch.floor(xs), torch.tensor(W - 2.0)).long()
    hr = (ys - y0.float())[:, :, None, None]              # (K, 2, 1, 1) h_ratio (float)
    wr = (xs - x0.float())[:, None, :, None]              # (K, 1, 2, 1) w_ratio
    flat = conv.flatten(2)                                # (B, D, h*w)
    b = rois[:, 0].long()[:, None, None]                  # (K, 1, 1)

    def corner(dy: int, dx: int) -> torch.Tensor:         # (K, 2, 2, D) float
        idx = (y0[:, :, None] + dy) * W + (x0[:, None, :] + dx)
        return flat[b, :, idx.clamp(0, H * W - 1)]

    # C: ul * (1. - hr) * (1. - wr) + ur * (1. - hr) * wr + dl * hr * (1. - wr) + dr * hr * wr, where
    # `1. - x` is a double and float * float stays a float: terms 1-3 are doubles, term 4 a float.
    one_h, one_w = 1.0 - hr.double(), 1.0 - wr.double()
    out = (corner(0, 0).double() * one_h * one_w + corner(0, 1).double() * one_h * wr.double()
           + (corner(1, 0) * hr).double() * one_w + (corner(1, 1) * hr * wr).double()).float()   # (K, 2, 2, D)
    outside = (ys < 0) | (ys >= H)                        # (K, 2)
    outside = outside[:, :, None] | ((xs < 0) | (xs >= W))[:, None, :]                     # (K, 2, 2)
    out = out.masked_fill(outside[..., None], 0.0)
    return out.permute(0, 3, 1, 2).contiguous()           # (K, D, 2, 2)
