"""The whole captioning system: CNN backbone (skipped with cached features) + a decoder.

`build_captioner(opt, data)` picks the decoder from `att_model`:
  topdown        NBT (pointer, sentinel, slot heads) - the default
  att2in2        the original's one-LSTM att2in2 core with NBT's pointer and slot heads
  updown_plain   the same top-down decoder with no pointer and no slot heads (benchmark baseline)
  showtell       Show-and-Tell baseline          aoanet   AoANet baseline
"""
from __future__ import annotations

import torch
from torch import nn

import dataclasses

from nbt.misc.backbone import build_backbone
from nbt.misc.encoded import Encoded, GroupLogits
from nbt.misc.grouping import grouping_loss_sum
from nbt.misc.losses import xe_loss_sums
from nbt.misc.model import NBTDecoder
from nbt.misc.regions import CachedRegions


class Captioner(nn.Module):
    def __init__(self, backbone: nn.Module | None, decoder: nn.Module, *, cached: bool = False):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.cached = cached

    def encode(self, batch: dict) -> Encoded:
        """Decoder features of a batch, without the grouping module's pair logits (only the
        training loss reads those)."""
        return self._encode(batch)[0]

    def _encode(self, batch: dict) -> tuple[Encoded, GroupLogits | None]:
        """The features, and the grouping module's pair logits split off them: the decoder
        repeats its features per caption and per beam, and never reads the logits."""
        images = batch["images"]
        conv = images if self.cached or self.backbone is None else self.backbone(images)
        if batch.get("region_feats") is not None and hasattr(self.decoder, "regions"):
            conv = CachedRegions(conv, batch["region_feats"])          # pooled by prepro_features.py
        f = self.decoder.encode(conv, batch["proposals"], batch["prop_mask"])
        groups = getattr(f, "groups", None)
        return (f, None) if groups is None else (dataclasses.replace(f, groups=None), groups)

    def forward(self, batch: dict, ss_prob: float = 0.0, scst=None) -> dict:
        """XE loss sums (see misc.losses), or with `scst` the self-critical loss - computed
        inside forward so DDP sees one graph."""
        f, groups = self._encode(batch)
        if scst is not None:
            return scst.loss(self.decoder, f, batch["rows"])
        out = self.decoder(f, batch, ss_prob=ss_prob)
        sums = xe_loss_sums(self.decoder, out, batch)
        sums["grouping"] = grouping_loss_sum(groups, batch) if groups is not None else sums["words"] * 0
        return sums


def build_captioner(opt, *, vocab_size: int, num_classes: int, fine_class: list[int],
                    class_vectors: torch.Tensor | None = None, fine_vectors: torch.Tensor | None = None) -> Captioner:
    """fine_vectors (F, class_emb_size): the fixed word vectors of fine_head "glove" (None: seeded
    random ones, or those a checkpoint loads)."""
    if opt.cached_features:        # only the shapes are needed: the conv maps come from the cache
        import dataclasses
        backbone = build_backbone(dataclasses.replace(opt, pretrained_cnn=False, cnn_weights=""))
    else:
        backbone = build_backbone(opt)
    feat_dim = backbone.out_channels
    common = dict(vocab_size=vocab_size, num_classes=num_classes, fine_class=fine_class, feat_dim=feat_dim,
                  rnn_size=opt.rnn_size, input_encoding_size=opt.input_encoding_size,
                  att_hid_size=opt.att_hid_size, class_emb_size=opt.class_emb_size,
                  loc_emb_size=opt.loc_emb_size, drop_prob=opt.drop_prob_lm, stride=backbone.stride,
                  image_size=opt.image_crop_size, class_vectors=class_vectors, grid_size=opt.grid_size,
                  roi_align=opt.roi_align)
    core = dict(sentinel_cell=opt.sentinel_cell, sentinel_key=opt.sentinel_key, extra_word_logit=opt.extra_word_logit,
                fine_head=opt.fine_head, fine_vectors=fine_vectors)
    if opt.att_model == "topdown":
        decoder = NBTDecoder(**common, **core, region_grouping=opt.region_grouping)
    elif opt.att_model == "updown_plain":
        decoder = NBTDecoder(**common, **core, pointer=False)
    elif opt.att_model in ("showtell", "aoanet", "att2in2"):
        from nbt.misc.baselines import build_baseline
        decoder = build_baseline(opt.att_model, heads=opt.aoa_heads, refine_layers=opt.aoa_refine_layers,
                                 region_grouping=opt.region_grouping, **common)
    else:
        raise ValueError(f"unknown att_model '{opt.att_model}' (topdown, att2in2, updown_plain, showtell, aoanet)")
    return Captioner(None if opt.cached_features else backbone, decoder, cached=bool(opt.cached_features))


def read_glove(path: str, names: list[str], dim: int, seed: int = 0) -> torch.Tensor:
    """GloVe vectors for class names (multi-word names averaged); unknown words get a *seeded*
    random vector (the original's were unseeded). Row 0 is the padding class."""
    from nbt.misc.io import DataError
    wanted = {w for n in names for w in n.split()}
    table: dict[str, torch.Tensor] = {}
    try:
        with open(path, encoding="utf8") as f:
            for line in f:
                word, _, rest = line.partition(" ")
                if word in wanted:
                    table[word] = torch.tensor([float(x) for x in rest.split()])
    except OSError:
        raise DataError(f"cannot read GloVe file {path}") from None
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(len(names) + 1, dim)
    for i, n in enumerate(names):
        vecs = [table[w] if w in table else torch.rand(dim, generator=g) * 2 - 1 for w in n.split()]
        if any(v.numel() != dim for v in vecs):
            raise DataError(f"{path}: vectors are not {dim}-d (set class_emb_size)")
        out[i + 1] = torch.stack(vecs).mean(0)
    return out
