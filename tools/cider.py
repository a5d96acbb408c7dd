"""CIDEr-D: document frequencies of reference n-grams (the SCST cache)."""
from __future__ import annotations

import math
from collections import Counter


def ngrams(tokens: list[str], n_max: int = 4) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for n in range(1, n_max + 1) for i in range(len(tokens) - n + 1))


def document_frequency(refs: list[list[str]], n_max: int = 4) -> dict:
    """refs: per image, its reference sentences (space-joined tokens) ->
    {"ref_len": log(#images), "df": {"w1 w2": count}} (JSON friendly, unlike the original's pickle)."""
    df: Counter = Counter()
    for sents in refs:
        seen = set()
        for s in sents:
            seen.update(ngrams(s.split(), n_max))
        df.update(" ".join(g) for g in seen)
    return {"ref_len": math.log(float(max(len(refs), 1))), "df": dict(df)}
