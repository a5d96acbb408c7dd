"""What every caption decoder shares: teacher forcing over (B, S, L) targets with scheduled
sampling. A decoder provides encode(conv, proposals, mask) -> an Encoded (misc/encoded.py),
init_state(features) -> its state (a NamedTuple whose `out` is the vector the slot heads read),
step(tokens, features, state, pointed, img=None) -> (word_logp, region_logp, state), and
`vocab_size`. With img (n,), features stay per image and step row i belongs to image img[i]
(decoding steps only its live beams that way)."""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from nbt.misc.encoded import Encoded


def map_state(state: NamedTuple, fn: Callable[[torch.Tensor], torch.Tensor]) -> NamedTuple:
    """The same kind of state with fn applied to each of its tensors."""
    return type(state)(*(fn(s) for s in state))


def feedback_tokens(tok: torch.Tensor, is_region: torch.Tensor, region_cls: torch.Tensor | None,
                    vocab_size: int) -> torch.Tensor:
    """Next-step inputs: a word feeds itself, a pointer V + r feeds its region's class row V + c.
    region_cls (N, R): the classes of each row's regions (None: a decoder without regions)."""
    if region_cls is None or region_cls.shape[1] == 0:
        return tok
    cls = region_cls.gather(1, (tok - vocab_size).clamp(min=0)[:, None]).squeeze(1)   # (N,)
    return torch.where(is_region, vocab_size + cls, tok)


class CaptionDecoder(nn.Module):
    has_pointer = False
    vocab_size: int

    def input_tokens(self, words: torch.Tensor, vis_cls: torch.Tensor) -> torch.Tensor:
        return words

    def slot_logp(self, h: torch.Tensor, region_feat: torch.Tensor, cls: torch.Tensor):
        raise NotImplementedError("this decoder has no slots")

    # -- teacher forcing ------------------------------------------------------------------
    def teacher_inputs(self, f: Encoded, batch: dict) -> tuple[Encoded, torch.Tensor]:
        """Features repeated for each of the S captions of an image, and the inputs of every step:
        BOS, then the caption's tokens (a visual word as its class: input_tokens) -> (B*S, L+1)."""
        words, vis = batch["words"], batch["vis_cls"]
        B, S, L = words.shape
        words, vis = words.reshape(B * S, L), vis.reshape(B * S, L)
        return f.expand(S), torch.cat([words.new_zeros(B * S, 1), self.input_tokens(words, vis)], 1)

    def forward(self, f: Encoded, batch: dict, ss_prob: float = 0.0) -> dict:
        """Per-step outputs for the targets of `batch` (B, S, L); returns log-probs. NBTDecoder
        computes its outputs over all steps at once instead; this loop is its reference (tested
        equal) and its scheduled-sampling path."""
        f, inputs = self.teacher_inputs(f, batch)
        state = self.init_state(f)
        word_out, region_out, h_out = [], [], []
        for t in range(inputs.shape[1]):
            if t > 0 and (inputs[:, t] == 0).all():   # every caption has ended: EOS was predicted
                break
            tok = inputs[:, t]
            if t > 0 and ss_prob > 0 and self.training:
                tok = self._scheduled_sample(tok, word_out[-1], region_out[-1], f, ss_prob)
            w, r, state = self.step(tok, f, state)
            word_out.append(w)
            region_out.append(r)
            h_out.append(state.out)
        return {"word_logp": torch.stack(word_out, 1), "region_logp": torch.stack(region_out, 1),
                "h_lang": torch.stack(h_out, 1), "features": f}

    def _scheduled_sample(self, tok, word_logp, region_logp, f: Encoded, prob):
        """Replace some inputs by the model's own previous prediction (word or pointed region)."""
        use = torch.rand(tok.shape[0], device=tok.device) < prob
        if not use.any():
            return tok
        both = torch.cat([word_logp, region_logp], -1).detach()
        pred = both.argmax(-1)
        region_cls = f.region_cls if f.num_regions else None
        own = feedback_tokens(pred, pred >= self.vocab_size, region_cls, self.vocab_size)
        return torch.where(use, own, tok)
