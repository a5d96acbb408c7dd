"""Region grouping: which proposals show *other members of the same group* as a given proposal.

Not in the original NBT. A caption says "two red rings" or "a red ring": whether a pointed region
is one of several depends on the other proposals (same class, same kind, same colour), and a
detector adds looser duplicate boxes around the same object that must not count. Softmax
attention averages regions, so the decoder cannot count them (README, "plural"). This module
compares every pair of proposals of the same detected class:

    p_ij = sigmoid(MLP([q_i * q_j ; |q_i - q_j| ; geometry_ij]))      q = W v   (v: region vectors)
    n_i  = sum_j p_ij          (soft number of other members of i's group)
    v_i <- v_i + W_n [n_i ; 1 - prod_j (1 - p_ij)]

and, where the ground truth says which objects form a group (the built-in world's instances carry
`attributes`), p_ij is supervised: 1 when i and j cover two different objects of one group, 0 when
they cover the same object (a duplicate), objects of different groups, or background. Without that
ground truth (COCO) the module is trained by the caption losses only.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from nbt.misc.encoded import GroupLogits


class RegionGrouping(nn.Module):
    def __init__(self, *, rnn_size: int, hidden: int):
        super().__init__()
        self.query = nn.Linear(rnn_size, hidden)
        self.pair = nn.Sequential(nn.Linear(2 * hidden + 5, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.count = nn.Linear(2, rnn_size)

    def forward(self, regions: torch.Tensor, boxes: torch.Tensor, cls: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """regions (B, R, H), boxes (B, R, 4) x1 y1 x2 y2, cls (B, R), mask (B, R) ->
        regions with their group-size embedding (B, R, H), pair logits (B, R, R), valid pairs (B, R, R).
        The MLP runs on the valid pairs only (two proposals of one class: a small share of all
        pairs among a COCO image's 100 detections); the logits of the other pairs are 0 and never read."""
        R = regions.shape[1]
        eye = torch.eye(R, dtype=torch.bool, device=regions.device)
        valid = mask[:, :, None] & mask[:, None] & (cls[:, :, None] == cls[:, None]) & ~eye   # (B, R, R)
        b, i, j = valid.nonzero(as_tuple=True)                             # (P,) each
        q = self.query(regions)                                            # (B, R, d)
        qi, qj = q[b, i], q[b, j]                                          # (P, d)
        geo = pair_geometry(boxes.float())[b, i, j].to(q.dtype)            # (P, 5)
        x = torch.cat([qi * qj, (qi - qj).abs(), geo], -1)                 # (P, 2d + 5)
        logits = q.new_zeros(valid.shape).index_put((b, i, j), self.pair(x).squeeze(-1))   # (B, R, R)
        p = torch.sigmoid(logits.float()) * valid                          # (B, R, R)
        n = p.sum(-1)                                                      # (B, R) others in the group
        some = 1 - torch.exp(torch.log1p(-p.clamp(max=1 - 1e-6)).sum(-1))  # (B, R) P(at least one)
        emb = self.count(torch.stack([n, some], -1).to(regions.dtype))     # (B, R, H)
        return (regions + emb) * mask[..., None], logits, valid


def batched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (B, R, 4), b (B, G, 4) x1 y1 x2 y2 -> IoU (B, R, G)."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])              # (B, R, G, 2)
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)                                # (B, R, G)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)               # (B, R)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)               # (B, G)
    return inter / (area_a[:, :, None] + area_b[:, None] - inter).clamp(min=1e-6)


def pair_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """boxes (B, R, 4) -> (B, R, R, 5): IoU, centre offsets over the mean size, log size ratios."""
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=1.0)                     # (B, R)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=1.0)
    cx, cy = boxes[..., 0] + w / 2, boxes[..., 1] + h / 2
    scale = (w[:, :, None] + w[:, None] + h[:, :, None] + h[:, None]) / 4  # (B, R, R)
    return torch.stack([batched_iou(boxes, boxes),
                        (cx[:, :, None] - cx[:, None]) / scale,
                        (cy[:, :, None] - cy[:, None]) / scale,
                        torch.log(w[:, :, None] / w[:, None]),
                        torch.log(h[:, :, None] / h[:, None])], -1)


def group_targets(proposals: torch.Tensor, prop_mask: torch.Tensor, gt: torch.Tensor,
                  gt_mask: torch.Tensor, *, iou_thresh: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """proposals (B, R, 6), gt (B, G, 7) [x1 y1 x2 y2 class fine group] -> pair targets (B, R, R)
    and which pairs they are known for (B, R, R). A proposal covers the GT object of its class with
    the highest IoU (>= iou_thresh); two proposals are a pair of the same group when they cover two
    different objects with the same group id. A pair is unknown when either proposal covers an
    object whose group is not known (-1), or when no object of its image has a known group."""
    B, R = prop_mask.shape
    if gt.shape[1] == 0:
        z = torch.zeros(B, R, R, device=proposals.device)
        return z, z.bool()
    iou = batched_iou(proposals[..., :4].float(), gt[..., :4].float())  # (B, R, G)
    same_cls = proposals[..., 4, None].long() == gt[:, None, :, 4].long()
    iou = iou.masked_fill(~(same_cls & gt_mask[:, None]), 0.0)
    best, obj = iou.max(-1)                                                # (B, R)
    covered = (best >= iou_thresh) & prop_mask
    group = gt[..., 6].long().gather(1, obj)                               # (B, R)
    pair = covered[:, :, None] & covered[:, None] & (obj[:, :, None] != obj[:, None]) \
        & (group[:, :, None] == group[:, None]) & (group[:, :, None] >= 0)
    unknown = covered & (group < 0)                                        # (B, R)
    image_known = ((gt[..., 6] >= 0) & gt_mask).any(1)                     # (B,)
    known = image_known[:, None, None] & ~unknown[:, :, None] & ~unknown[:, None]
    return pair.float(), known


def grouping_loss_sum(groups: GroupLogits, batch: dict) -> torch.Tensor:
    """Binary cross-entropy summed over the valid pairs whose targets are known."""
    target, known = group_targets(batch["proposals"], batch["prop_mask"], batch["gt"], batch["gt_mask"])
    valid = groups.valid & known
    if not valid.any():
        return groups.logits.sum() * 0
    return F.binary_cross_entropy_with_logits(groups.logits[valid].float(), target[valid], reduction="sum")
