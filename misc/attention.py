"""Additive (Bahdanau) attention, the kind every NBT attention uses:

    score_i = w^T tanh(K_i + W_q q) + b        K_i = W_k key_i (projected once per image)

`additive_scores` computes the scores of T queries per row against that row's keys (the pointer
over all teacher-forced steps at once) without materialising the (N, T, R, A) hidden.
"""
from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    """score_i = w^T tanh(K_i + W_q q); keys are projected once per image (`project`)."""

    def __init__(self, *, query_size: int, key_size: int, hidden: int):
        super().__init__()
        self.key_proj = nn.Linear(key_size, hidden)
        self.query_proj = nn.Linear(query_size, hidden)
        self.score = nn.Linear(hidden, 1)

    def project(self, keys: torch.Tensor) -> torch.Tensor:
        return self.key_proj(keys)                                     # (B, N, A)

    def scores(self, query: torch.Tensor, keys_proj: torch.Tensor, img: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Q), keys_proj (B, N, A) -> (B, N); with img (n,), keys_proj[img] for n queries."""
        if img is not None and not torch.is_grad_enabled():          # decoding: in cache-sized chunks
            return decode_scores(keys_proj, self.query_proj(query), img, self.score.weight[0], self.score.bias)
        q = self.query_proj(query)[:, None, :]
        hidden = ((keys_proj if img is None else keys_proj[img]) + q).tanh_()   # (B, N, A)
        return self.score(hidden).squeeze(-1)                          # (B, N)

    def forward(self, query: torch.Tensor, values: torch.Tensor, keys_proj: torch.Tensor,
                mask: torch.Tensor | None = None, img: torch.Tensor | None = None,
                count: bool = False):
        """query (B, Q), values (B, N, D), mask (B, N) True = valid -> (B, D).
        With img (n,): n queries, query i looking at image img[i] of the per-image values / keys
        / mask (decoding: the live beams of a batch; img sorted) -> (n, D).
        count: also return sum_i sigmoid(score_i) over valid i, (B, 1) - how many items match
        the query, which the softmax average cannot tell ("a ring" vs "two rings")."""
        if img is not None and mask is not None:
            mask = mask[img]
        s = self.scores(query, keys_proj, img)
        n = None
        if count:
            n = torch.sigmoid(s.float())
            n = (n if mask is None else n * mask).sum(-1, keepdim=True).to(s.dtype)     # (B, 1)
        if mask is not None:
            s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        w = torch.softmax(s, dim=-1)
        if mask is not None:
            w = w * mask.any(-1, keepdim=True)                        # an image with no regions
        if img is None:
            out = torch.bmm(w.unsqueeze(1), values).squeeze(1)         # (B, D)
        else:
            out = weighted_sum_by_image(w, values, img)
        return (out, n) if count else out


CACHE_BYTES = 1 << 20              # decode_scores' chunk of hidden values on a CPU


def decode_scores(keys_proj: torch.Tensor, q: torch.Tensor, img: torch.Tensor, w: torch.Tensor,
                  b: torch.Tensor) -> torch.Tensor:
    """Decoding (no autograd): keys_proj (B, N, A) per image, q (n, A) projected queries, img (n,)
    the image of each query (sorted), w (A,), b (1,) -> scores (n, N) = w^T tanh(keys_proj[img[i]]
    + q[i]) + b. On a CPU the rows go in chunks of one image's rows whose (m, N, A) hidden fits
    the cache (CACHE_BYTES), so it is written, squashed and reduced there instead of in memory,
    and the keys are broadcast, not gathered (beam 3 at COCO dims: 3.5x faster than gathering
    every row's keys first). On a GPU: one chunk, the keys gathered."""
    n, (N, A) = q.shape[0], keys_proj.shape[1:]
    w = w.to(keys_proj.dtype)
    if keys_proj.is_cuda:
        return torch.matmul((keys_proj[img] + q[:, None]).tanh_(), w) + b          # (n, N)
    rows = max(1, CACHE_BYTES // max(1, N * A * keys_proj.element_size()))
    out = q.new_empty(n, N)
    ids = img.tolist()
    s = 0
    while s < n:
        e = s + 1
        while e < n and e - s < rows and ids[e] == ids[s]:
            e += 1
        hidden = torch.add(keys_proj[ids[s]], q[s:e, None]).tanh_()    # (m, N, A), rows of one image
        torch.matmul(hidden, w, out=out[s:e])                          # (m, N)
        s = e
    return out.add_(b)


def weighted_sum_by_image(w: torch.Tensor, values: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """w (n, N) weights of n queries, values (B, N, D), img (n,) sorted -> (n, D), without
    copying each image's values once per query: the queries of an image become the rows of one
    (B, M, N) @ (B, N, D) batched product (M = most queries of one image)."""
    B = values.shape[0]
    counts = torch.bincount(img, minlength=B)                          # (B,)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(len(img), device=img.device) - first[img]       # (n,) rank within its image
    packed = w.new_zeros(B, int(counts.max()) if len(img) else 0, w.shape[1])   # (B, M, N)
    packed[img, pos] = w
    return torch.bmm(packed.to(values.dtype), values)[img, pos]       # (n, D)


def additive_scores(keys: torch.Tensor, q: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    rows_per_chunk: int = 0) -> torch.Tensor:
    """keys (N, R, A) projected keys, q (N, T, A) projected queries, w (A,), b (1,) ->
    scores (N, T, R) = w^T tanh(keys[n, r] + q[n, t]) + b.

    The same maths as score(tanh(keys[:, None] + q[:, :, None])), with a hand-written backward
    that goes through the rows in chunks small enough for the CPU's cache (one chunk on a GPU):
    autograd's version makes about ten passes over the (N, T, R, A) values in memory (an outer
    product for the score's gradient, tanh's backward, two reductions, ...); this one reads the
    stored tanh once."""
    if not rows_per_chunk:
        per_row = max(1, q.shape[1] * keys.shape[1] * keys.shape[2])
        rows_per_chunk = keys.shape[0] if keys.is_cuda else max(1, (1 << 22) // per_row)   # 16 MB fp32
    return _AdditiveScores.apply(keys, q, w, b, rows_per_chunk)


class _AdditiveScores(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keys, q, w, b, chunk):
        ctx.w_dtype, ctx.b_dtype = w.dtype, b.dtype
        w = w.to(keys.dtype)
        hidden, scores = [], []
        for i in range(0, keys.shape[0], chunk):
            h = (keys[i:i + chunk, None] + q[i:i + chunk, :, None]).tanh_()   # (n, T, R, A)
            hidden.append(h)
            scores.append(h @ w)                                           # (n, T, R)
        ctx.save_for_backward(w, *hidden)
        return torch.cat(scores) + b.to(keys.dtype)

    @staticmethod
    def backward(ctx, grad):                                               # grad (N, T, R)
        w, *hidden = ctx.saved_tensors
        g_keys, g_q, g_w = [], [], torch.zeros(w.shape, dtype=torch.float32, device=w.device)
        i = 0
        for h in hidden:                                                   # (n, T, R, A) tanh
            g = grad[i:i + len(h)].to(h.dtype)                             # (n, T, R)
            i += len(h)
            g_w += (g.reshape(1, -1) @ h.reshape(-1, h.shape[-1])).squeeze(0).float()
            d = (h * h).neg_().add_(1).mul_(g[..., None]).mul_(w)          # d score / d (keys + q)
            g_keys.append(d.sum(1))                                        # (n, R, A)
            g_q.append(d.sum(2))                                           # (n, T, A)
        g_b = grad.sum().reshape(1).to(ctx.b_dtype)
        return torch.cat(g_keys), torch.cat(g_q), g_w.to(ctx.w_dtype), g_b, None
