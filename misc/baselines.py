"""Baselines on the same data, loop, decoding and evaluation: Show-and-Tell, AoANet, and the
original's second decoder, att2in2. Show-and-Tell and AoANet do not point at regions, so neither
can say a word it never saw in training captions - which is what the NOC comparison shows.

Att2in2 (the original's `--att_model att2in2`, its misc/AttModel.py Att2in2Core): one LSTM in
place of NBT's two, Rennie et al.'s att2in2 cell, where the attended conv grid a_g and attended
regions a_r (both queried by the previous h') enter only the cell input, through a maxout of two
halves:
    [i, f, o] = sigmoid(W_x x + W_h h')                               x = embed(token)
    c~ = max over the two halves of (A x + B h' + C a_g + D a_r)      (N, 2H) -> (N, H)
    c = f * c' + i * c~ ,  h = o * tanh(c)
and on it the original put NBT's visual sentinel (sigmoid(W x + U h') * tanh(c)), pointer and
plural / fine-grained slot heads: it is grounded, like NBT, without NBT's attention LSTM.

Show-and-Tell (Vinyals et al., CVPR 2015): the global CNN feature is fed once, before the first
word; one LSTM; a plain softmax over words.

AoANet (Huang et al., ICCV 2019): a refiner of multi-head self-attention + attention-on-attention
(AoA: an information vector and a sigmoid gate from [attended ; query]) with residual + LayerNorm,
over the attended features (here the region vectors and the conv grid), then an LSTM decoder
whose input is [word ; mean feature + previous context], multi-head attention from h, and AoA.
Published settings (8 heads, 6 refiner layers, rnn 1024) are the defaults of its options.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from nbt.misc.attention import AdditiveAttention
from nbt.misc.decoder_base import CaptionDecoder
from nbt.misc.encoded import ImageFeature, RefinedFeatures, RegionFeatures
from nbt.misc.grouping import RegionGrouping
from nbt.misc.model import NBTDecoder
from nbt.misc.regions import RegionEncoder
from nbt.misc.slot_heads import SlotHeads


class LSTMState(NamedTuple):
    h: torch.Tensor                # (N, H)
    c: torch.Tensor                # (N, H)

    @property
    def out(self) -> torch.Tensor:
        return self.h


class AoAState(NamedTuple):
    h: torch.Tensor                # (N, H)
    c: torch.Tensor                # (N, H)
    ctx: torch.Tensor              # (N, H) the AoA context of the step, fed back as input

    @property
    def out(self) -> torch.Tensor:
        return self.ctx


class ShowTell(CaptionDecoder):
    def __init__(self, *, vocab_size, num_classes, fine_class, feat_dim, rnn_size=1024, input_encoding_size=512,
                 att_hid_size=512, class_emb_size=300, loc_emb_size=300, drop_prob=0.5, stride=32,
                 image_size=512, class_vectors=None, **_):
        super().__init__()
        self.vocab_size, self.rnn_size = vocab_size, rnn_size
        self.image = nn.Sequential(nn.Linear(feat_dim, input_encoding_size), nn.ReLU(), nn.Dropout(drop_prob))
        self.embed = nn.Sequential(nn.Embedding(vocab_size, input_encoding_size), nn.ReLU(), nn.Dropout(drop_prob))
        self.lstm = nn.LSTMCell(input_encoding_size, rnn_size)
        self.drop = nn.Dropout(drop_prob)
        self.logit = nn.Linear(rnn_size, vocab_size)

    def encode(self, conv, proposals, prop_mask) -> ImageFeature:
        return ImageFeature(image=self.image(conv.flatten(2).mean(-1)))      # (B, E)

    def init_state(self, f: ImageFeature) -> LSTMState:
        z = f.image.new_zeros(f.batch, self.rnn_size)
        return LSTMState(*self.lstm(f.image, (z, z)))                       # the image, fed once

    def step(self, tokens, f, state: LSTMState, pointed=None, img=None):
        h, c = self.lstm(self.embed(tokens.clamp(max=self.vocab_size - 1)), tuple(state))
        logp = torch.log_softmax(self.logit(self.drop(h)).float(), -1)
        return logp, logp.new_zeros(logp.shape[0], 0), LSTMState(h, c)


class AoA(nn.Module):
    """Attention on attention: i = W_i [a ; q], g = sigmoid(W_g [a ; q]), out = g * i."""

    def __init__(self, size: int):
        super().__init__()
        self.proj = nn.Linear(2 * size, 2 * size)

    def forward(self, attended, query):
        return nn.functional.glu(self.proj(torch.cat([attended, query], -1)), -1)


class RefinerLayer(nn.Module):
    def __init__(self, size: int, heads: int, drop_prob: float):
        super().__init__()
        self.att = nn.MultiheadAttention(size, heads, dropout=0.1, batch_first=True)
        self.aoa = AoA(size)
        self.norm = nn.LayerNorm(size)
        self.drop = nn.Dropout(drop_prob)

    def forward(self, x, pad):
        a, _ = self.att(x, x, x, key_padding_mask=pad, need_weights=False)
        return self.norm(x + self.drop(self.aoa(a, x)))


class AoANet(CaptionDecoder):
    def __init__(self, *, vocab_size, num_classes, fine_class, feat_dim, rnn_size=1024, input_encoding_size=512,
                 att_hid_size=512, class_emb_size=300, loc_emb_size=300, drop_prob=0.5, stride=32,
                 image_size=512, class_vectors=None, heads=8, refine_layers=6, grid_size=0, roi_align="torchvision",
                 **_):
        super().__init__()
        H = rnn_size
        self.vocab_size, self.rnn_size = vocab_size, H
        self.regions = RegionEncoder(feat_dim=feat_dim, num_classes=num_classes, rnn_size=H,
                                     class_emb_size=class_emb_size, loc_emb_size=loc_emb_size,
                                     drop_prob=drop_prob, stride=stride, image_size=image_size,
                                     class_vectors=class_vectors, grid_size=grid_size, roi_align=roi_align)
        self.refiner = nn.ModuleList(RefinerLayer(H, heads, drop_prob) for _ in range(refine_layers))
        self.embed = nn.Sequential(nn.Embedding(vocab_size, input_encoding_size), nn.ReLU(), nn.Dropout(drop_prob))
        self.lstm = nn.LSTMCell(input_encoding_size + H, H)
        self.att = nn.MultiheadAttention(H, heads, dropout=0.1, batch_first=True)
        self.aoa = AoA(H)
        self.drop = nn.Dropout(drop_prob)
        self.logit = nn.Linear(H, vocab_size)

    def encode(self, conv, proposals, prop_mask) -> RefinedFeatures:
        f = self.regions(conv, proposals, prop_mask)
        feats = torch.cat([f.grid, f.regions], 1)                                # (B, N + R, H)
        valid = torch.cat([prop_mask.new_ones(f.grid.shape[:2]), prop_mask], 1)  # (B, N + R)
        for layer in self.refiner:
            feats = layer(feats, ~valid)
        mean = (feats * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)   # (B, H)
        return RefinedFeatures(feats=feats, valid=valid, mean=mean)

    def init_state(self, f: RefinedFeatures) -> AoAState:
        z = f.mean.new_zeros(f.batch, self.rnn_size)
        return AoAState(z, z, z)

    def step(self, tokens, f: RefinedFeatures, state: AoAState, pointed=None, img=None):
        if img is not None:
            f = f.rows(img)
        x = torch.cat([self.embed(tokens.clamp(max=self.vocab_size - 1)), f.mean + state.ctx], -1)
        h, c = self.lstm(x, (state.h, state.c))
        a, _ = self.att(h[:, None], f.feats, f.feats, key_padding_mask=~f.valid, need_weights=False)
        ctx = self.aoa(a.squeeze(1), h)
        logp = torch.log_softmax(self.logit(self.drop(ctx)).float(), -1)
        return logp, logp.new_zeros(logp.shape[0], 0), AoAState(h, c, ctx)


class Att2in2State(NamedTuple):
    h_lang: torch.Tensor           # (N, H) the one LSTM's state (named as NBT's language LSTM's, which
    c_lang: torch.Tensor           # (N, H) the sentinel, pointer and slot heads read)

    @property
    def out(self) -> torch.Tensor:
        return self.h_lang


class Att2in2(NBTDecoder):
    """The att2in2 cell with NBT's sentinel, pointer and slot heads (see the module docstring).
    NBTDecoder's encoding, outputs (sentinel, pointer), teacher forcing and slots are inherited;
    its own modules replace the two LSTMs (NBTDecoder.__init__ is not run). The sentinel gate reads
    the embedded token where NBT's reads its language LSTM's input."""

    def __init__(self, *, vocab_size: int, num_classes: int, fine_class: list[int], feat_dim: int,
                 rnn_size: int = 1024, input_encoding_size: int = 512, att_hid_size: int = 512,
                 class_emb_size: int = 300, loc_emb_size: int = 300, drop_prob: float = 0.5,
                 stride: int = 32, image_size: int = 512, class_vectors: torch.Tensor | None = None,
                 grid_size: int = 0, region_grouping: bool = False, roi_align: str = "torchvision", **_):
        CaptionDecoder.__init__(self)
        H, E, A = rnn_size, input_encoding_size, att_hid_size
        self.vocab_size, self.num_classes, self.rnn_size = vocab_size, num_classes, H
        self.has_pointer = True
        self.regions = RegionEncoder(feat_dim=feat_dim, num_classes=num_classes, rnn_size=H,
                                     class_emb_size=class_emb_size, loc_emb_size=loc_emb_size,
                                     drop_prob=drop_prob, stride=stride, image_size=image_size,
                                     class_vectors=class_vectors, grid_size=grid_size, roi_align=roi_align)
        self.grouping = RegionGrouping(rnn_size=H, hidden=A) if region_grouping else None
        self.embed = nn.Sequential(nn.Embedding(vocab_size + num_classes + 1, E), nn.ReLU(), nn.Dropout(drop_prob))
        self.sentinel_previous, self.sentinel_key = False, None      # NBT's defaults: current cell, pointer's keys
        self.att_grid = AdditiveAttention(query_size=H, key_size=H, hidden=A)
        self.att_region = AdditiveAttention(query_size=H, key_size=H, hidden=A)
        self.i2h = nn.Linear(E, 5 * H)             # gates i, f, o, then the cell input's two halves
        self.h2h = nn.Linear(H, 5 * H)
        self.a2c_grid = nn.Linear(H, 2 * H)
        self.a2c_region = nn.Linear(H, 2 * H)
        self.drop = nn.Dropout(drop_prob)
        self.logit = nn.Linear(H, vocab_size)
        self.gate_x = nn.Linear(E, H)              # the sentinel's gate (the original's fourth i2h / h2h gate)
        self.gate_h = nn.Linear(H, H)
        self.sentinel = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Dropout(drop_prob))
        self.pointer = AdditiveAttention(query_size=H, key_size=H, hidden=A)
        self.heads = SlotHeads(rnn_size=H, fine_class=fine_class, num_classes=num_classes, drop_prob=drop_prob)

    def fc_gates(self, fc: torch.Tensor) -> None:
        return None                                # no attention LSTM (NBTDecoder.encode asks)

    def init_state(self, f: RegionFeatures) -> Att2in2State:
        z = f.fc.new_zeros(f.batch, self.rnn_size)
        return Att2in2State(z, z)

    def recur(self, tokens: torch.Tensor, f: RegionFeatures, state: Att2in2State, img: torch.Tensor | None = None):
        """tokens (N,) -> x = embed(tokens) (N, E) (what the sentinel gate reads), the new state."""
        H = self.rnn_size
        x = self.embed(tokens)                                                          # (N, E)
        att_g = self.att_grid(state.h_lang, f.grid, f.grid_keys, img=img)               # (N, H)
        att_r = self.att_region(state.h_lang, f.regions, f.region_keys, f.region_mask, img=img)   # (N, H)
        sums = self.i2h(x) + self.h2h(state.h_lang)                                     # (N, 5H)
        i, forget, o = torch.sigmoid(sums[:, :3 * H]).chunk(3, -1)                      # each (N, H)
        cand = sums[:, 3 * H:] + self.a2c_grid(att_g) + self.a2c_region(att_r)          # (N, 2H)
        cand = torch.maximum(cand[:, :H], cand[:, H:])                                  # (N, H) maxout
        c = forget * state.c_lang + i * cand
        return x, Att2in2State(o * torch.tanh(c), c)


def build_baseline(name: str, *, heads: int = 8, refine_layers: int = 6, region_grouping: bool = False,
                   **common) -> CaptionDecoder:
    if name == "showtell":
        return ShowTell(**common)
    if name == "aoanet":
        return AoANet(**common, heads=heads, refine_layers=refine_layers)
    if name == "att2in2":
        return Att2in2(**common, region_grouping=region_grouping)
    raise ValueError(f"unknown baseline '{name}'")
