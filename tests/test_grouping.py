"""Region grouping (misc/grouping.py): pair targets from the ground truth, masks, a learnable task."""

import torch

from nbt.misc.grouping import RegionGrouping, batched_iou, group_targets, grouping_loss_sum, pair_geometry
from nbt.misc.encoded import GroupLogits


def _props(boxes, classes):
    b = torch.tensor(boxes, dtype=torch.float32)
    c = torch.tensor(classes, dtype=torch.float32)[:, None]
    return torch.cat([b, c, torch.ones_like(c)], -1)[None]                 # (1, R, 6)


# two red rings (group 0) far apart, one blue ring (group 1), a square (group 2)
GT = torch.tensor([[[0, 0, 10, 10, 1, 0, 0], [30, 0, 40, 10, 1, 0, 0],
                    [0, 30, 10, 40, 1, 1, 1], [30, 30, 40, 40, 2, 0, 2]]], dtype=torch.float32)
GT_MASK = torch.ones(1, 4, dtype=torch.bool)


def test_batched_iou_matches_hand_values():
    a = torch.tensor([[[0.0, 0, 10, 10], [5, 5, 15, 15]]])
    iou = batched_iou(a, a)
    assert iou.shape == (1, 2, 2)
    assert torch.allclose(iou[0, 0, 0], torch.tensor(1.0))
    assert torch.allclose(iou[0, 0, 1], torch.tensor(25 / 175))


def test_pair_targets_count_members_not_duplicates():
    props = _props([[0, 0, 10, 10], [30, 0, 40, 10], [1, 0, 11, 10],      # ring A, ring B, duplicate of A
                    [0, 30, 10, 40], [30, 30, 40, 40], [60, 60, 70, 70]],  # blue ring, square, background
                   [1, 1, 1, 1, 2, 1])
    mask = torch.ones(1, 6, dtype=torch.bool)
    target, known = group_targets(props, mask, GT, GT_MASK)
    assert bool(known.all())
    t = target[0]
    assert t[0, 1] == 1 and t[1, 0] == 1 and t[2, 1] == 1                  # two red rings
    assert t[0, 2] == 0                                                    # same ring twice: no pair
    assert t[0, 3] == 0 and t[3, 4] == 0                                   # other group / other class
    assert t[5].sum() == 0 and t[:, 5].sum() == 0                          # background counts for nothing


def test_unknown_groups_give_no_supervision():
    gt = GT.clone()
    gt[..., 6] = -1                                                        # COCO: no group ids
    props = _props([[0, 0, 10, 10], [30, 0, 40, 10]], [1, 1])
    target, known = group_targets(props, torch.ones(1, 2, dtype=torch.bool), gt, GT_MASK)
    assert not bool(known.any()) and target.sum() == 0


def test_pairs_on_an_object_of_unknown_group_are_left_out():
    """Groups read from captions name some classes only: a square no caption names has group -1."""
    gt = GT.clone()
    gt[0, 3, 6] = -1
    props = _props([[0, 0, 10, 10], [30, 0, 40, 10], [30, 30, 40, 40], [31, 30, 41, 40]], [1, 1, 2, 2])
    target, known = group_targets(props, torch.ones(1, 4, dtype=torch.bool), gt, GT_MASK)
    assert known[0, 0, 1] and target[0, 0, 1] == 1                        # the two red rings: known
    assert not known[0, 2, 3] and not known[0, 0, 2]                       # anything on the square: not


def test_module_shapes_masks_and_padding():
    torch.manual_seed(0)
    g = RegionGrouping(rnn_size=16, hidden=8)
    regions = torch.randn(2, 5, 16)
    boxes = torch.rand(2, 5, 2) * 40
    boxes = torch.cat([boxes, boxes + 10], -1)
    cls = torch.tensor([[1, 1, 2, 1, 0], [3, 3, 3, 3, 3]])
    mask = torch.tensor([[True, True, True, True, False], [True] * 5])
    out, logits, valid = g(regions, boxes, cls, mask)
    assert out.shape == (2, 5, 16) and logits.shape == (2, 5, 5)
    assert not valid[0, 0, 0] and valid[0, 0, 1] and not valid[0, 0, 2]    # self / other class
    assert not valid[0, 4].any() and not valid[0, :, 4].any()              # padding
    assert torch.all(out[0, 4] == 0)


def _all_pairs_reference(g, regions, boxes, cls, mask):
    """The module's maths written out over every (i, j) pair, then masked."""
    R = regions.shape[1]
    q = g.query(regions)
    qi, qj = q[:, :, None].expand(-1, -1, R, -1), q[:, None].expand(-1, R, -1, -1)
    logits = g.pair(torch.cat([qi * qj, (qi - qj).abs(), pair_geometry(boxes)], -1)).squeeze(-1)
    valid = mask[:, :, None] & mask[:, None] & (cls[:, :, None] == cls[:, None]) & ~torch.eye(R, dtype=torch.bool)
    p = torch.sigmoid(logits) * valid
    some = 1 - torch.prod(1 - p.clamp(max=1 - 1e-6), -1)
    return (regions + g.count(torch.stack([p.sum(-1), some], -1))) * mask[..., None], logits, valid


def test_valid_pairs_only_equals_the_all_pairs_reference():
    """The pair MLP runs on same-class pairs only; outputs, valid logits and gradients are those
    of the MLP over all pairs."""
    torch.manual_seed(0)
    g = RegionGrouping(rnn_size=16, hidden=8)
    regions = torch.randn(2, 6, 16, requires_grad=True)
    xy = torch.rand(2, 6, 2) * 40
    boxes = torch.cat([xy, xy + torch.rand(2, 6, 2) * 20 + 2], -1)
    cls = torch.tensor([[1, 1, 2, 1, 2, 0], [3, 1, 3, 3, 2, 3]])
    mask = torch.tensor([[True] * 5 + [False], [True] * 6])
    results = []
    for fn in (g.forward, lambda *a: _all_pairs_reference(g, *a)):
        g.zero_grad()
        regions.grad = None
        out, logits, valid = fn(regions, boxes, cls, mask)
        (out.square().sum() + logits[valid].sum()).backward()
        grads = [regions.grad.clone()] + [p.grad.clone() for p in g.parameters()]
        results.append((out, logits[valid], valid, grads))
    (out, lv, valid, grads), (ref_out, ref_lv, ref_valid, ref_grads) = results
    assert torch.equal(valid, ref_valid) and int(valid.sum()) == (6 + 2) + 12     # ordered pairs: {0,1,3} {2,4} | {0,2,3,5}
    assert torch.allclose(out, ref_out, atol=1e-5) and torch.allclose(lv, ref_lv, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-5)


def test_grouping_learns_colour_pairs():
    """Regions whose features carry a 'colour' bit: after training, pairs of the same colour and
    class are predicted as one group, a duplicate box (IoU 0.8) of the same object is not."""
    torch.manual_seed(0)
    g = RegionGrouping(rnn_size=8, hidden=16)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    boxes = torch.tensor([[[0.0, 0, 10, 10], [30, 0, 40, 10], [0, 30, 10, 40], [1, 0, 11, 10]]])
    cls = torch.ones(1, 4, dtype=torch.long)
    mask = torch.ones(1, 4, dtype=torch.bool)
    target = torch.tensor([[[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0.0]]])
    colour = torch.tensor([1.0, 1.0, -1.0, 1.0])
    for _ in range(300):
        regions = torch.randn(1, 4, 8) * 0.1
        regions[..., 0] = colour
        _, logits, valid = g(regions, boxes, cls, mask)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[valid], target[valid])
        opt.zero_grad()
        loss.backward()
        opt.step()
    regions = torch.zeros(1, 4, 8)
    regions[..., 0] = colour
    p = torch.sigmoid(g(regions, boxes, cls, mask)[1])[0]
    assert p[0, 1] > 0.9 and p[0, 2] < 0.1 and p[0, 3] < 0.1


def test_loss_sum_is_zero_without_ground_truth():
    logits = torch.randn(1, 2, 2, requires_grad=True)
    out = GroupLogits(logits=logits, valid=torch.ones(1, 2, 2, dtype=torch.bool))
    batch = {"proposals": _props([[0, 0, 10, 10], [30, 0, 40, 10]], [1, 1]),
             "prop_mask": torch.ones(1, 2, dtype=torch.bool), "gt": GT[:, :0], "gt_mask": GT_MASK[:, :0]}
    assert float(grouping_loss_sum(out, batch).detach()) == 0.0
    batch.update(gt=GT, gt_mask=GT_MASK)
    assert float(grouping_loss_sum(out, batch).detach()) > 0.0


def test_groups_are_read_from_the_captions_without_annotated_groups(world_dir):
    """COCO has no group annotations: "two rings" makes the rings one group, "a square" a group of
    its own, and a class no caption names stays unknown."""
    import numpy as np

    from conftest import world_options
    from nbt.misc.dataset import CaptionDataset, DataBundle
    bundle = DataBundle.load(world_options(world_dir))
    names = list(bundle.classes.names)
    circle, square, star = (names.index(n) + 1 for n in ("circle", "square", "star"))
    ds = CaptionDataset(bundle, "train", train=False)
    row = ds.rows[0]
    bundle.captions[row] = [["two", "rings", "and", "a", "square"], ["a", "ring", "and", "a", "frame"]]
    gt_cls = np.array([circle, circle, square, square, star])
    group = ds.caption_groups(row, gt_cls)
    assert group[0] == group[1] >= 0                                        # named in the plural once
    assert group[2] >= 0 and group[3] >= 0 and len({group[0], group[2], group[3]}) == 3
    assert group[4] == -1
