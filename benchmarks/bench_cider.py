"""Our vectorised CIDEr-D vs pycocoevalcap's on a 300-caption SCST batch (5 references each),
same tokenised captions and the same document frequencies, measured side by side.

    python benchmarks/bench_cider.py
pycocoevalcap computes its document frequencies from the references it scores, so both sides use
corpus-mode df here; `ours (SCST path)` is the reward path of training: word ids, references
encoded once and cached, df from the training references.
"""
from __future__ import annotations

import numpy as np
from pycocoevalcap.cider.cider import Cider

from common import timeit, world_options
from nbt.misc.dataset import DataBundle
from nbt.misc.cider import CiderD, document_frequency


def main():
    opt = world_options()
    b = DataBundle.load(opt)
    rows = b.rows("train")
    refs = [[" ".join(c) for c in b.captions[r]] for r in rows[:300]]
    hyps = [" ".join(b.captions[r][0]) + " on the left" for r in rows[300:600]]
    gts = {i: refs[i] for i in range(300)}
    res = {i: [hyps[i]] for i in range(300)}
    theirs = Cider().compute_score(gts, res)
    ours = CiderD().compute_score(hyps, refs)
    diff = float(np.abs(np.asarray(theirs[1]) - ours[1]).max())
    t_theirs = timeit(lambda: Cider().compute_score(gts, res), repeat=5)
    t_ours = timeit(lambda: CiderD().compute_score(hyps, refs), repeat=5)
    w2i = dict(b.vocab.word_to_ix)
    df = document_frequency([[" ".join(c) for c in b.captions[r]] for r in rows])
    scorer = CiderD(df, w2i)

    def ids(sents):
        arr = np.zeros((len(sents), max(len(s.split()) for s in sents)), np.int64)
        for i, s in enumerate(sents):
            arr[i, :len(s.split())] = [b.vocab.encode(w) for w in s.split()]
        return arr
    H = ids(hyps)
    ref_ids = {i: ids(refs[i]) for i in range(300)}
    scorer.score_ids(H, list(range(300)), ref_ids.__getitem__)                       # fills the reference cache
    t_scst = timeit(lambda: scorer.score_ids(H, list(range(300)), ref_ids.__getitem__), repeat=10)
    t_cold = timeit(lambda: CiderD(df, w2i).score_ids(H, list(range(300)), ref_ids.__getitem__), repeat=3)
    keys5 = [i // 5 for i in range(300)]                                 # 60 images x 5 samples
    t_five = timeit(lambda: scorer.score_ids(H, keys5, ref_ids.__getitem__), repeat=10)
    print(f"300 captions x 5 references; max |ours - pycocoevalcap| per caption = {diff:.2e}")
    print(f"pycocoevalcap Cider:        {t_theirs * 1000:8.1f} ms")
    print(f"ours, strings (corpus df):  {t_ours * 1000:8.1f} ms   {t_theirs / t_ours:5.1f}x faster")
    print(f"ours, SCST path (ids):      {t_scst * 1000:8.1f} ms   {t_theirs / t_scst:5.1f}x faster")
    print(f"  same, 60 images x 5 samples: {t_five * 1000:5.1f} ms")
    print(f"  same, references not cached yet (df table build + encoding, first epoch): {t_cold * 1000:.1f} ms")


if __name__ == "__main__":
    main()
