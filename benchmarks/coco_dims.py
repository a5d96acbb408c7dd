"""A model and a synthetic batch at COCO dimensions, for the speed benchmarks (no data files).

Dimensions: vocabulary 9,500 words, 80 classes with 409 fine-grained words, 100 proposals per image,
ResNet-101 conv maps (2,048 channels, stride 32: a 16 x 16 grid at 512 px), rnn 1,024, attention
hidden 512, word encoding 512, 5 captions of up to 16 tokens per image.

The proposals' classes follow real detector output: on the 159 coco-mini images (FastestDet, top
100 detections) an image has 12 detected classes on average and 14 % of its 100 x 100 proposal
pairs share a class; here each image draws 12 classes and spreads its proposals over them with
geometric weights (1/2, 1/4, ...), which gives about the same share of same-class pairs. Captions
hold about 11 words, two of them visual words grounded in 1 to 5 proposals of their class.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _checkout  # noqa: E402,F401  (`nbt` = this checkout)

from nbt.misc.captioner import build_captioner  # noqa: E402
from nbt.misc.config import options_from_dict  # noqa: E402

COCO = dict(vocab=9500, classes=80, fine=409, proposals=100, feat=2048, grid=16, image=512, stride=32,
            cnn="res101")
TINY = dict(vocab=60, classes=6, fine=12, proposals=7, feat=512, grid=4, image=64, stride=32, cnn="res18")


def coco_options(*, tiny: bool = False, **overrides):
    """Options of the COCO config (normal_coco_res101.yml) at its model size; `tiny` shrinks
    every dimension (smoke tests). Cached features unless cached_features="" is passed."""
    d = TINY if tiny else COCO
    values = dict(cnn_backend=d["cnn"], pretrained_cnn=False, cnn_weights="", cached_features="synthetic",
                  rnn_size=32 if tiny else 1024, input_encoding_size=16 if tiny else 512,
                  att_hid_size=16 if tiny else 512, class_emb_size=8 if tiny else 300,
                  loc_emb_size=8 if tiny else 300, image_crop_size=d["image"], grid_size=d["grid"],
                  max_proposal=d["proposals"], seq_length=16, seq_per_img=5, batch_size=10,
                  drop_prob_lm=0.5, cuda=False)
    values.update(overrides)
    return options_from_dict(values)


def coco_model(opt, *, tiny: bool = False):
    """The project's captioner (misc.captioner.build_captioner) at COCO sizes, random weights."""
    d = TINY if tiny else COCO
    fine_class = [1 + i % d["classes"] for i in range(d["fine"])]          # fine word -> class 1..C
    torch.manual_seed(opt.seed)
    model = build_captioner(opt, vocab_size=d["vocab"], num_classes=d["classes"], fine_class=fine_class)
    return model


def coco_batch(B: int, *, tiny: bool = False, raw_images: bool = False, visual: bool = True,
               S: int = 5, L: int = 16, seed: int = 0) -> dict:
    """A collated batch (misc.dataset.collate's keys) of B images. raw_images: (B, 3, 512, 512)
    pixels, else cached conv maps (B, 2048, 16, 16). visual=False: no visual words (the plain
    top-down baseline reads every word as a word)."""
    d = TINY if tiny else COCO
    g = torch.Generator().manual_seed(seed)
    R, C, V, size = d["proposals"], d["classes"], d["vocab"], d["image"]
    weights = 0.5 ** torch.arange(1, 13, dtype=torch.float)               # 12 classes per image
    cls = torch.stack([torch.randperm(C, generator=g)[:12][torch.multinomial(weights, R, True, generator=g)] + 1
                       if C >= 12 else torch.randint(1, C + 1, (R,), generator=g) for _ in range(B)])  # (B, R)
    xy = torch.rand(B, R, 2, generator=g) * size * 0.7
    wh = torch.rand(B, R, 2, generator=g) * size * 0.3 + 8
    proposals = torch.cat([xy, xy + wh, cls[..., None].float(), torch.rand(B, R, 1, generator=g)], -1)
    length = torch.randint(9, 14, (B, S), generator=g)                    # words per caption
    words = torch.randint(1, V, (B, S, L), generator=g)
    words[torch.arange(L) >= length[..., None]] = 0
    vis_cls = torch.zeros(B, S, L, dtype=torch.long)
    plural, fg = torch.zeros_like(vis_cls), torch.full_like(vis_cls, -1)
    pos = torch.zeros(B, S, L, R, dtype=torch.bool)
    fine_class = torch.tensor([1 + i % C for i in range(d["fine"])])
    if visual:
        for b in range(B):
            for s in range(S):
                for t in torch.randperm(int(length[b, s]), generator=g)[:2].tolist():
                    r = int(torch.randint(R, (1,), generator=g))
                    c = int(cls[b, r])
                    same = (cls[b] == c).nonzero().flatten()
                    k = min(len(same), int(torch.randint(1, 6, (1,), generator=g)))
                    pos[b, s, t, same[torch.randperm(len(same), generator=g)[:k]]] = True
                    vis_cls[b, s, t], plural[b, s, t] = c, int(k > 1)
                    choices = (fine_class == c).nonzero().flatten()
                    fg[b, s, t] = int(choices[torch.randint(len(choices), (1,), generator=g)])
    if raw_images:
        images = torch.rand(B, 3, size, size, generator=g)
    else:
        n = size // d["stride"]
        images = torch.rand(B, d["feat"], n, n, generator=g)
    return {"images": images, "proposals": proposals, "prop_mask": torch.ones(B, R, dtype=torch.bool),
            "gt": torch.zeros(B, 1, 7), "gt_mask": torch.zeros(B, 1, dtype=torch.bool),
            "words": words, "vis_cls": vis_cls, "plural": plural, "fine": fg, "pos": pos,
            "image_ids": list(range(B)), "rows": list(range(B)), "n_visual": int((vis_cls > 0).sum()),
            "n_grounded": int((vis_cls > 0).sum()), "skipped": []}
