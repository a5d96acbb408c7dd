"""The NBT decoder: two-layer top-down attention LSTM with a visual sentinel and a region pointer.

At each step:
  attention LSTM   x = [fc ; embed(token)]                         -> h_att
  attention        a = att_grid(h_att) + att_regions(h_att)        (summed, as the original)
  count            n = sum_i sigmoid(region score_i)               (not in the original: softmax
                   attention averages, so it cannot tell one red ring from two; see README)
  language LSTM    x = [a ; h_att ; n]                             -> h_lang, c_lang
  sentinel         s = sigmoid(W x + U h_lang(t-1)) * tanh(c_lang(t))   (the current cell, as in
                   adaptive attention; the original used c_lang(t-1))
  pointer          p = softmax over [s ; regions] of w^T tanh(W_k k + W_q h_lang)
  output           log p(word w) = log softmax(W_o h_lang)_w + log p(sentinel)
                   log p(region i) = log p_i
With `region_grouping`, region vectors also carry a learned group size (misc/grouping.py).
Tokens: 0 = BOS / EOS, 1..V-1 words; V + c feeds the embedding of class c (a pointed region).

Options that make it compute the original's core (chosen by misc/original_checkpoint.py):
  sentinel_cell "previous"   s = sigmoid(W x + U h_lang(t-1)) * tanh(c_lang(t-1))
  sentinel_key "own"         the sentinel's pointer key is its own linear layer of s (the original's
                             f_fc2), not the pointer's key layer of the regions
  extra_word_logit           W_o has V + 1 outputs: the last one is never a word (the original's
                             vocab_size + 1 logits) but takes part in the softmax; decoding never
                             emits it
(The count channel has no switch: the original's weights give it zero input weights.)
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import nn

from nbt.misc.attention import AdditiveAttention, additive_scores, decode_scores
from nbt.misc.decoder_base import CaptionDecoder
from nbt.misc.encoded import GroupLogits, RegionFeatures
from nbt.misc.grouping import RegionGrouping
from nbt.misc.regions import RegionEncoder
from nbt.misc.slot_heads import SlotHeads

NEG = -1e4    # masked log-probability (finite, so fp16 / bf16 stay finite)


class TopDownState(NamedTuple):
    """The two LSTMs' states, each (N, H)."""
    h_att: torch.Tensor
    c_att: torch.Tensor
    h_lang: torch.Tensor
    c_lang: torch.Tensor

    @property
    def out(self) -> torch.Tensor:
        """What the slot heads read: the language LSTM's output."""
        return self.h_lang


class NBTDecoder(CaptionDecoder):
    has_pointer = True

    def __init__(self, *, vocab_size: int, num_classes: int, fine_class: list[int], feat_dim: int,
                 rnn_size: int = 1024, input_encoding_size: int = 512, att_hid_size: int = 512,
                 class_emb_size: int = 300, loc_emb_size: int = 300, drop_prob: float = 0.5,
                 stride: int = 32, image_size: int = 512, pointer: bool = True,
                 class_vectors: torch.Tensor | None = None, grid_size: int = 0,
                 region_grouping: bool = False, roi_align: str = "torchvision", sentinel_cell: str = "current",
                 sentinel_key: str = "shared", extra_word_logit: bool = False, fine_head: str = "linear",
                 fine_vectors: torch.Tensor | None = None):
        super().__init__()
        H, E, A = rnn_size, input_encoding_size, att_hid_size
        self.vocab_size, self.num_classes, self.rnn_size = vocab_size, num_classes, H
        self.has_pointer = pointer
        self.regions = RegionEncoder(feat_dim=feat_dim, num_classes=num_classes, rnn_size=H,
                                     class_emb_size=class_emb_size, loc_emb_size=loc_emb_size,
                                     drop_prob=drop_prob, stride=stride, image_size=image_size,
                                     class_vectors=class_vectors, grid_size=grid_size, roi_align=roi_align)
        self.grouping = RegionGrouping(rnn_size=H, hidden=A) if region_grouping else None
        self.embed = nn.Sequential(nn.Embedding(vocab_size + num_classes + 1, E), nn.ReLU(), nn.Dropout(drop_prob))
        self.att_lstm = nn.LSTMCell(H + E, H)
        self.att_grid = AdditiveAttention(query_size=H, key_size=H, hidden=A)
        self.att_region = AdditiveAttention(query_size=H, key_size=H, hidden=A)
        self.lang_lstm = nn.LSTMCell(2 * H + 1, H)
        self.drop = nn.Dropout(drop_prob)
        self.logit = nn.Linear(H, vocab_size + int(extra_word_logit))
        if sentinel_cell not in ("current", "previous") or sentinel_key not in ("shared", "own"):
            raise ValueError(f"sentinel_cell '{sentinel_cell}' / sentinel_key '{sentinel_key}': "
                             "current | previous / shared | own")
        self.sentinel_previous = sentinel_cell == "previous"
        if pointer:
            self.gate_x = nn.Linear(2 * H + 1, H)
            self.gate_h = nn.Linear(H, H)
            self.sentinel = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Dropout(drop_prob))
            self.pointer = AdditiveAttention(query_size=H, key_size=H, hidden=A)
            self.sentinel_key = nn.Linear(H, A) if sentinel_key == "own" else None     # None: pointer.key_proj
            self.heads = SlotHeads(rnn_size=H, fine_class=fine_class, num_classes=num_classes, drop_prob=drop_prob,
                                   fine_head=fine_head, vector_size=class_emb_size, fine_vectors=fine_vectors)

    # -- features -------------------------------------------------------------------------
    def encode(self, conv: torch.Tensor, proposals: torch.Tensor, prop_mask: torch.Tensor) -> RegionFeatures:
        f = self.regions(conv, proposals, prop_mask)
        if self.grouping is not None:
            regions, logits, valid = self.grouping(f.regions, proposals[..., :4], f.region_cls, prop_mask)
            f = dataclasses.replace(f, regions=regions, groups=GroupLogits(logits, valid))
        return dataclasses.replace(
            f, grid_keys=self.att_grid.project(f.grid),                       # (B, N, A)
            region_keys=self.att_region.project(f.regions),                   # (B, R, A)
            pointer_keys=self.pointer.project(f.regions) if self.has_pointer else None,   # (B, R, A)
            fc_gates=self.fc_gates(f.fc))                                     # (B, 4H)

    def fc_gates(self, fc: torch.Tensor) -> torch.Tensor | None:
        """The attention LSTM's gate inputs from fc, W_ih[:, :H] fc + b_ih + b_hh (B, 4H): fc is the
        same at every step, so decoding computes this part of the input once per image."""
        lstm, H = self.att_lstm, self.rnn_size
        return nn.functional.linear(fc, lstm.weight_ih[:, :H], lstm.bias_ih + lstm.bias_hh)

    def init_state(self, f: RegionFeatures) -> TopDownState:
        z = f.fc.new_zeros(f.batch, self.rnn_size)
        return TopDownState(z, z, z, z)

    # -- one step -------------------------------------------------------------------------
    def step(self, tokens: torch.Tensor, f: RegionFeatures, state: TopDownState,
             pointed: torch.Tensor | None = None, img: torch.Tensor | None = None):
        """tokens (N,), f expanded to N rows, pointed (N, R) regions already used ->
        word_logp (N, V), region_logp (N, R), new state. With img (N,) (sorted), f stays per
        image and row i belongs to image img[i] (decoding steps only the live beams)."""
        x_lang, new = self.recur(tokens, f, state, img)
        region_mask = f.region_mask if img is None else f.region_mask[img]
        valid = region_mask if pointed is None else region_mask & ~pointed
        c_sentinel = state.c_lang if self.sentinel_previous else new.c_lang
        word_logp, region_logp = self.outputs(self.drop(new.h_lang), x_lang, state.h_lang, c_sentinel,
                                              f.pointer_keys, valid, img=img)
        return word_logp, region_logp, new

    def recur(self, tokens: torch.Tensor, f: RegionFeatures, state: TopDownState, img: torch.Tensor | None = None):
        """The recurrence alone (embedding, both LSTMs, the two attentions): tokens (N,) ->
        x_lang (N, 2H + 1), the new state. Nothing in `outputs` feeds back into it."""
        if img is not None and f.fc_gates is not None and not torch.is_grad_enabled():   # decoding
            h_att, c_att = self.att_cell(f.fc_gates[img], self.embed(tokens), state)
        else:
            fc = f.fc if img is None else f.fc[img]
            x = torch.cat([fc, self.embed(tokens)], -1)
            h_att, c_att = self.att_lstm(x, (state.h_att, state.c_att))
        att_r, count = self.att_region(h_att, f.regions, f.region_keys, f.region_mask, img=img, count=True)
        att = self.att_grid(h_att, f.grid, f.grid_keys, img=img) + att_r
        x_lang = torch.cat([att, h_att, count], -1)                      # (N, 2H + 1)
        h_lang, c_lang = self.lang_lstm(x_lang, (state.h_lang, state.c_lang))
        return x_lang, TopDownState(h_att, c_att, h_lang, c_lang)

    def att_cell(self, fc_gates: torch.Tensor, emb: torch.Tensor, state: TopDownState):
        """att_lstm([fc ; emb]) with fc's part of the gates given (fc_gates (n, 4H)): the same LSTM
        cell (gates i, f, g, o), without the per-step product of fc."""
        lstm, H = self.att_lstm, self.rnn_size
        gates = torch.addmm(fc_gates, emb, lstm.weight_ih[:, H:].t()).addmm_(state.h_att, lstm.weight_hh.t())   # (n, 4H)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f).mul_(state.c_att).add_(torch.sigmoid(i).mul_(torch.tanh(g)))
        return torch.sigmoid(o).mul_(torch.tanh(c)), c

    def outputs(self, out: torch.Tensor, x_lang: torch.Tensor, h_prev: torch.Tensor, c_lang: torch.Tensor,
                pointer_keys: torch.Tensor | None, valid: torch.Tensor, drop_masks: tuple | None = None,
                img: torch.Tensor | None = None):
        """Word and region log-probs from the recurrence's values at one step, leading dims (N,),
        or at every step at once, leading dims (N, T) (teacher forcing). out = dropout(h_lang)
        (..., H), x_lang (..., 2H + 1), h_prev = h_lang of the step before, c_lang (..., H) the
        cell state the sentinel reads (this step's, or with sentinel_cell "previous" the one before);
        pointer_keys (N, R, A) and valid (N, R) regions of each row (with img (N,) one step's rows:
        pointer_keys per image, (B, R, A), row i of image img[i]).
        drop_masks: the sentinel's two dropout masks drawn beforehand (None: draw them here)."""
        word_logp = torch.log_softmax(self.logit(out).float(), -1)[..., :self.vocab_size]   # (..., V)
        if not self.has_pointer:
            return word_logp, word_logp.new_zeros(*word_logp.shape[:-1], 0)
        gate = torch.sigmoid(self.gate_x(x_lang) + self.gate_h(h_prev))
        lin, relu, drop = self.sentinel
        z = gate * torch.tanh(c_lang)
        z = self.drop(z) if drop_masks is None else z * drop_masks[0]
        sentinel = relu(lin(z))
        sentinel = drop(sentinel) if drop_masks is None else sentinel * drop_masks[1]   # (..., H)
        q = self.pointer.query_proj(out)                                   # (..., A)
        key = self.pointer.key_proj if self.sentinel_key is None else self.sentinel_key
        s_score = self.pointer.score((key(sentinel) + q).tanh_())                          # (..., 1)
        if out.dim() == 3:                                                 # all steps: (N, T, R)
            w = self.pointer.score
            r_score, valid = additive_scores(pointer_keys, q, w.weight[0], w.bias), valid[:, None]
        elif img is not None and not torch.is_grad_enabled():             # decoding step: (N, R)
            r_score = decode_scores(pointer_keys, q, img, self.pointer.score.weight[0], self.pointer.score.bias)
        else:                                                              # one step: (N, R)
            keys = pointer_keys if img is None else pointer_keys[img]
            r_score = self.pointer.score((keys + q[:, None]).tanh_()).squeeze(-1)
        r_score = r_score.float().masked_fill(~valid, float("-inf"))
        ptr = torch.log_softmax(torch.cat([s_score.float(), r_score], -1), -1)   # (..., 1 + R)
        return word_logp + ptr[..., :1], ptr[..., 1:].clamp(min=NEG)

    # -- teacher forcing, all steps' outputs at once ------------------------------------------
    def forward(self, f: RegionFeatures, batch: dict, ss_prob: float = 0.0) -> dict:
        """As CaptionDecoder.forward (the per-step reference), but only the recurrence runs step
        by step: the vocabulary softmax, the sentinel and the pointer run once over all steps
        (N * T rows), which leaves the NBT's extra cost out of the loop. The dropout masks are
        drawn inside the loop in the per-step order, so a seeded run draws the same masks.
        Scheduled sampling feeds each step's prediction back: it takes the per-step path."""
        if ss_prob > 0 and self.training:
            return super().forward(f, batch, ss_prob)
        f, inputs = self.teacher_inputs(f, batch)                          # (BS, L+1)
        state = self.init_state(f)
        h_prev, c_prev = state.h_lang, state.c_lang
        rows = []
        for t in range(inputs.shape[1]):
            if t > 0 and (inputs[:, t] == 0).all():   # every caption has ended: EOS was predicted
                break
            x_lang, state = self.recur(inputs[:, t], f, state)
            out = self.drop(state.h_lang)
            masks = (dropout_mask(self.drop, out), dropout_mask(self.sentinel[2], out)) if self.has_pointer else ()
            c_sentinel = c_prev if self.sentinel_previous else state.c_lang
            rows.append((out, x_lang, h_prev, c_sentinel, state.h_lang) + masks)
            h_prev, c_prev = state.h_lang, state.c_lang
        out, x_lang, h_prev, c_lang, h_lang, *masks = [torch.stack(x, 1) if x[0] is not None else None
                                                       for x in zip(*rows)]    # (N, T, ...)
        word_logp, region_logp = self.outputs(out, x_lang, h_prev, c_lang, f.pointer_keys, f.region_mask,
                                              drop_masks=tuple(masks) if masks and masks[0] is not None else None)
        return {"word_logp": word_logp, "region_logp": region_logp, "h_lang": h_lang, "features": f}

    def slot_logp(self, h_lang: torch.Tensor, region_feat: torch.Tensor, cls: torch.Tensor):
        """Plural (N, 2) and fine-grained (N, F) log-probs of N pointed regions."""
        return self.heads(region_feat, h_lang, cls)

    def input_tokens(self, words: torch.Tensor, vis_cls: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing inputs: a visual word feeds its class embedding row V + c."""
        return torch.where(vis_cls > 0, self.vocab_size + vis_cls, words)

    @torch.no_grad()
    def copy_class(self, novel: int, seen: int) -> None:
        self.regions.copy_class(novel, seen)
        emb = self.embed[0].weight
        emb[self.vocab_size + novel] = emb[self.vocab_size + seen]



def dropout_mask(drop: nn.Dropout, like: torch.Tensor) -> torch.Tensor | None:
    """The mask drop(x) would multiply an x shaped like `like` by (0 or 1 / (1 - p)), drawn now
    from the same random stream; None when drop is off (eval, p = 0)."""
    if not drop.training or drop.p == 0:
        return None
    return drop(torch.ones_like(like))
