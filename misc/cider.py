"""CIDEr-D, vectorised with numpy: the SCST reward and a fast evaluation metric.

Same definition as coco-caption / pycocoevalcap's `Cider` (which is CIDEr-D): n = 1..4, tf-idf
vectors with idf = log(#images) - log(max(1, df)), clipped overlap min(h, r) * r, cosine per n,
Gaussian length penalty (sigma 6, lengths counted in bigrams as coco-caption does), mean over n,
mean over references, x10. Document frequencies come from the training references (cached by
prepro as JSON) or, in corpus mode, from the references being scored.

No per-sentence dictionaries: sentences are integer arrays, every n-gram gets an int64 code
(base-V digits of its word ids, times 4, plus n - 1), sentence vectors are (row, code, count)
triples. References become one table per hypothesis (strings) or per image (SCST, encoded once
and cached): their n-grams as sorted keys with the tf-idf in each reference; one `_score` matches
all hypotheses against it with a searchsorted and bincounts.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nbt.misc.io import DataError, read_json
from nbt.misc.legacy_pickle import NGRAM_PICKLE_TYPES, load_legacy_pickle

N_MAX = 4
SIGMA = 6.0


def document_frequency(refs: list[list[str]], n_max: int = N_MAX, quiet: bool = True) -> dict:
    """refs: per image, its reference sentences (space-joined tokens) ->
    {"ref_len": log(#images), "df": {"w1 w2": number of images whose references hold the n-gram}}
    (JSON friendly, unlike the original's pickle). Vectorised for COCO's 616k captions: each
    n-gram is one int64 code (base = number of distinct words), counted once per image by sorting
    (code, image) pairs; only distinct n-grams are joined back into strings."""
    words: dict[str, int] = {}
    flat: list[int] = []
    lengths, owner = [], []
    bar = tqdm(refs, desc="CIDEr-D df", unit=" images", disable=quiet or None, mininterval=1)
    for i, sents in enumerate(bar):
        for sent in sents:
            toks = sent.split()
            flat.extend([words.setdefault(t, len(words) + 1) for t in toks])
            lengths.append(len(toks))
            owner.append(i)
    base = len(words) + 1
    if base ** n_max >= 2 ** 63:                          # codes would overflow: count n-gram strings
        return document_frequency_plain(refs, n_max)
    ids = np.asarray(flat, np.int64)                      # (T,) all tokens, sentence after sentence
    lengths = np.asarray(lengths, np.int64)
    ends = np.repeat(np.cumsum(lengths), lengths)         # (T,) end offset of each token's sentence
    image = np.repeat(np.asarray(owner, np.int64), lengths)
    pos = np.arange(len(ids))
    text = np.array([""] + list(words), dtype=object)     # word id -> word
    df: dict[str, int] = {}
    code = np.zeros(len(ids), np.int64)                   # (T,) code of the n-gram starting there
    for n in range(1, n_max + 1):
        code[: len(ids) - n + 1] = code[: len(ids) - n + 1] * base + ids[n - 1:]
        ok = pos + n <= ends                              # the n-gram stays inside its sentence
        c, im = code[ok], image[ok]
        order = np.lexsort((im, c))
        c, im = c[order], im[order]
        first = np.ones(len(c), bool)
        first[1:] = (c[1:] != c[:-1]) | (im[1:] != im[:-1])   # one count per (n-gram, image)
        grams, counts = np.unique(c[first], return_counts=True)
        strings = text[grams // base ** (n - 1)]
        for k in range(1, n):
            strings = strings + " " + text[grams // base ** (n - 1 - k) % base]
        df.update(zip(strings.tolist(), counts.tolist()))
    return {"ref_len": math.log(float(max(len(refs), 1))), "df": df}


def document_frequency_plain(refs: list[list[str]], n_max: int = N_MAX) -> dict:
    """The same table by counting n-gram strings (any vocabulary size; the tests' reference)."""
    df: Counter = Counter()
    for sents in refs:
        seen = set()
        for s in sents:
            t = s.split()
            seen.update(" ".join(t[i:i + n]) for n in range(1, n_max + 1) for i in range(len(t) - n + 1))
        df.update(seen)
    return {"ref_len": math.log(float(max(len(refs), 1))), "df": dict(df)}


EOS_TOKENS = ("0", "<eos>")       # the end token the original's prepro_ngrams.py appended to every reference


def resolve_cached_tokens(name: str) -> Path:
    """`cached_tokens` -> its file: a path, or a name as the original gave it, which read
    data/<name>.p (cfgs/normal_coco_res101.yml: coco-train-idxs = data/coco-train-idxs.p)."""
    path = Path(name)
    if path.is_file():
        return path
    legacy = Path("data") / f"{name}.p"
    if legacy.is_file():
        return legacy
    raise DataError(f"file not found: {name} (cached_tokens; nor the original's place for that name, {legacy})")


def read_document_frequency(name: str, ix_to_word: dict[int, str], train_refs=None) -> dict:
    """The document frequencies `cached_tokens` names -> `document_frequency`'s format:
    - a JSON file (prepro_dic_coco.py --output_df), as it is;
    - a pickle of the original's prepro_ngrams.py ({'document_frequency': {n-gram tuple: images},
      'ref_len': images}, Python 2), read by misc/legacy_pickle (no code runs). Its `-idxs` file
      keys n-grams by word ids (str) of the dic it was made with, its `-words` file by words; ids
      are mapped with `ix_to_word` (the run's dic, which must be that dic: `train_refs`, the
      training images' token lists, check it), n-grams with the end token it appended to every
      reference are dropped (captions here are scored without one), and ref_len, the number of
      reference images, becomes its log (the original's pycider used the count itself as the log)."""
    path = resolve_cached_tokens(name)
    with open(path, "rb") as f:
        head = f.read(1)
    if path.suffix == ".json" or head in (b"{", b" ", b"\n"):
        return read_json(path)
    data = load_legacy_pickle(path, NGRAM_PICKLE_TYPES)
    if not isinstance(data, dict) or not isinstance(data.get("document_frequency"), dict) \
            or not isinstance(data.get("ref_len"), (int, float)) or not data["ref_len"] > 0:
        raise DataError(f"{path}: not the original's n-gram file (a dict of 'document_frequency' and 'ref_len' > 0)")
    grams = data["document_frequency"]
    if not all(isinstance(g, tuple) and 0 < len(g) <= N_MAX and all(isinstance(w, str) for w in g) for g in grams):
        raise DataError(f"{path}: 'document_frequency' keys are not n-grams (tuples of 1 to {N_MAX} strings)")
    by_ids = bool(grams) and all(w.isdigit() for g in grams for w in g)
    if by_ids:
        unknown = sorted({w for g in grams for w in g if w != "0" and int(w) not in ix_to_word}, key=int)
        if unknown:
            raise DataError(f"{path}: word id {unknown[0]} is not in the vocabulary of the run's dic "
                            f"({len(unknown)} ids in all): it was made with another dic")
        words = {w: ix_to_word[int(w)] for g in grams for w in g if w != "0"}
    df = {" ".join(words[w] if by_ids else w for w in g): float(n) for g, n in grams.items()
          if not any(w in EOS_TOKENS for w in g)}
    if by_ids and train_refs is not None:
        check_df_fits(df, train_refs, path)
    return {"ref_len": math.log(float(data["ref_len"])), "df": df}


def check_df_fits(df: dict, train_refs, path, top: int = 10) -> None:
    """The document frequencies of word ids mapped through the run's dic must look like the run's
    training references: most of the 10 unigrams in the most images must be among the 50 there."""
    ours: Counter = Counter()
    for sents in train_refs:
        ours.update({t for s in sents for t in s})
    common = {w for w, _ in ours.most_common(5 * top)}
    theirs = [g for g in sorted(df, key=lambda g: -df[g]) if " " not in g and g != "UNK"][:top]
    if len([w for w in theirs if w in common]) < len(theirs) / 2:
        raise DataError(f"{path}: read through the run's dic its word ids give the n-grams "
                        f"{', '.join(theirs[:5])} ... as the most frequent, which the training captions are "
                        "not: it was made with another dic (use that dic, or write this dic's with "
                        "prepro_dic_coco.py --output_df)")


_PAD = np.iinfo(np.int64).max


def gram_table(tokens: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tokens (S, L) int64, word ids >= 1, 0 = padding ->
    rows, codes, counts (one entry per distinct n-gram of a sentence, sorted by row then code),
    and lengths (S,) in bigrams."""
    S, L = tokens.shape
    valid = tokens > 0
    lengths = np.maximum(valid.sum(1) - 1, 0).astype(np.float64)
    grams = np.full((S, N_MAX * max(L, 1)), _PAD, np.int64)                 # (S, 4L) codes, padded
    code = np.zeros((S, L), np.int64)
    ok = np.ones((S, L), bool)
    for n in range(1, N_MAX + 1):
        width = L - n + 1
        if width <= 0:
            break
        code = code[:, :width] * base + tokens[:, n - 1:n - 1 + width]          # (S, width)
        ok = ok[:, :width] & valid[:, n - 1:n - 1 + width]
        grams[:, (n - 1) * L:(n - 1) * L + width] = np.where(ok, code * N_MAX + (n - 1), _PAD)
    grams.sort(axis=1)                                                        # per sentence; padding last
    W = grams.shape[1]
    real = grams != _PAD
    first = real.copy()
    first[:, 1:] &= grams[:, 1:] != grams[:, :-1]                            # first of each run of equal codes
    rows, cols = np.nonzero(first)
    start = rows * W + cols                                                   # flat index of each run
    stop = np.append(start[1:], S * W)
    stop = np.minimum(stop, rows * W + real.sum(1)[rows])                     # a run ends at the row's padding
    return rows, grams[rows, cols], (stop - start).astype(np.float64), lengths


class CiderD:
    def __init__(self, df: dict | None = None, word_to_ix: dict[str, int] | None = None):
        """df: `document_frequency` output (training references); None = corpus mode.
        word_to_ix: the model vocabulary, for `score_ids` (SCST) with cached references."""
        self.df = df
        self.base = (max(word_to_ix.values()) + 1) if word_to_ix else 0
        assert self.base ** N_MAX * N_MAX < 2 ** 62, f"vocabulary of {self.base} words: 4-gram codes overflow int64"
        self._ref_cache: dict = {}
        if df is not None and word_to_ix:
            codes, values = [], []
            for gram, count in df["df"].items():
                ids = [word_to_ix.get(w, 0) for w in gram.split()]
                if 0 in ids or len(ids) > N_MAX:
                    continue
                c = 0
                for i in ids:
                    c = c * self.base + i
                codes.append(c * N_MAX + len(ids) - 1)
                values.append(count)
            order = np.argsort(codes)
            self._df_codes = np.array(codes, np.int64)[order]
            self._df_values = np.array(values, np.float64)[order]
            # Every n-gram gets a dense id: its index in the df table, or, for reference n-grams the
            # df does not know (out-of-vocabulary words), len(df) + order of first sight.
            self._extra_codes = np.zeros(0, np.int64)                     # sorted
            self._extra_ids = np.zeros(0, np.int64)

    # -- strings (evaluation, parity with pycocoevalcap) -----------------------------------
    def compute_score(self, hyps: list[str], refs: list[list[str]]) -> tuple[float, np.ndarray]:
        """hyps[i]: one tokenised caption; refs[i]: its references -> (mean, per-caption scores)."""
        assert len(hyps) == len(refs), "one reference list per hypothesis"
        vocab: dict[str, int] = {}
        sents = [s.split() for s in hyps] + [r.split() for rs in refs for r in rs]
        L = max([len(s) for s in sents] + [1])
        tokens = np.zeros((len(sents), L), np.int64)
        for i, s in enumerate(sents):
            tokens[i, :len(s)] = [vocab.setdefault(w, len(vocab) + 1) for w in s]
        base = len(vocab) + 1
        rows, codes, counts, lengths = gram_table(tokens, base)
        uniq, inverse = np.unique(codes, return_inverse=True)
        if self.df is None:
            df_table = document_frequency(refs)
        else:
            df_table = self.df
        words = {i: w for w, i in vocab.items()}
        df_vals = np.array([df_table["df"].get(_decode(c, base, words), 0.0) for c in uniq], np.float64)
        idf = (df_table["ref_len"] - np.log(np.maximum(1.0, df_vals)))[inverse]
        H = len(hyps)
        n_refs = np.array([len(r) for r in refs], np.int64)
        is_ref = rows >= H
        tables = _reference_tables(rows[is_ref] - H, inverse[is_ref], codes[is_ref] % N_MAX,
                                   (counts * idf)[is_ref], lengths[H:], n_refs, G=len(uniq))
        h = ~is_ref
        scores = _score(rows[h], inverse[h], codes[h] % N_MAX, (counts * idf)[h], lengths[:H],
                        np.arange(H), tables, G=len(uniq))
        return float(scores.mean()) if len(scores) else 0.0, scores

    # -- word ids (SCST) ---------------------------------------------------------------------
    def _lookup(self, codes: np.ndarray, add: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """codes -> (idf, dense id; -1 for an n-gram no reference seen so far has)."""
        k = np.minimum(np.searchsorted(self._df_codes, codes), len(self._df_codes) - 1)
        found = self._df_codes[k] == codes
        idf = self.df["ref_len"] - np.log(np.maximum(1.0, np.where(found, self._df_values[k], 0.0)))
        gid = np.where(found, k, -1)
        if not found.all():
            missing = codes[~found]
            if add:
                new = np.setdiff1d(missing, self._extra_codes)
                if len(new):
                    ids = len(self._df_codes) + len(self._extra_codes) + np.arange(len(new))
                    codes_all = np.concatenate([self._extra_codes, new])
                    order = np.argsort(codes_all, kind="stable")
                    self._extra_codes = codes_all[order]
                    self._extra_ids = np.concatenate([self._extra_ids, ids])[order]
            if len(self._extra_codes):
                j = np.minimum(np.searchsorted(self._extra_codes, missing), len(self._extra_codes) - 1)
                gid[~found] = np.where(self._extra_codes[j] == missing, self._extra_ids[j], -1)
        return idf, gid

    def _image(self, key, ref_ids):
        """References of one image, encoded once: its distinct n-grams (dense ids, sorted), their
        tf-idf in each reference, reference norms and lengths."""
        if key not in self._ref_cache:
            refs = np.asarray(ref_ids(key), np.int64)
            rows, codes, counts, lengths = gram_table(refs, self.base)
            idf, gid = self._lookup(codes, add=True)
            uniq, col = np.unique(gid, return_inverse=True)
            values = np.zeros((len(uniq), len(refs)))                       # (u, R) tf-idf per reference
            values[col, rows] = counts * idf
            n_of = np.zeros(len(uniq), np.int64)
            n_of[col] = codes % N_MAX
            norms = np.sqrt(np.bincount(rows * N_MAX + codes % N_MAX, weights=(counts * idf) ** 2,
                                        minlength=len(refs) * N_MAX)).reshape(len(refs), N_MAX)
            self._ref_cache[key] = (uniq, values, n_of, norms, lengths)
        return self._ref_cache[key]

    def score_ids(self, hyps: np.ndarray, keys: list, ref_ids) -> np.ndarray:
        """hyps (N, L) word ids (0 = padding / after EOS); keys[i]: image of hypothesis i;
        ref_ids(key) -> (R, L') word ids of that image's references (called once per image, then
        cached; a dict's `__getitem__` will do)."""
        assert self.df is not None and self.base, "score_ids needs df and word_to_ix"
        if isinstance(ref_ids, dict):
            ref_ids = ref_ids.__getitem__
        slot_of: dict = {}
        slot = np.array([slot_of.setdefault(k, len(slot_of)) for k in keys], np.int64)   # (N,)
        images = [self._image(k, ref_ids) for k in slot_of]
        G = len(self._df_codes) + len(self._extra_codes)
        R = max(v[1].shape[1] for v in images)
        sizes = np.array([len(v[0]) for v in images])
        # All images' n-grams as one sorted key array: slot * G + dense id.
        ref_keys = np.concatenate([v[0] for v in images]) + np.repeat(np.arange(len(images)) * G, sizes)
        ref_vals = np.zeros((len(ref_keys), R))                                # (U, R)
        ref_norms = np.zeros((len(images), R, N_MAX))
        ref_len = np.zeros((len(images), R))
        n_refs = np.zeros(len(images), np.int64)
        at = 0
        for s, (uniq, values, _, norms, lengths) in enumerate(images):
            r = values.shape[1]
            ref_vals[at:at + len(uniq), :r] = values
            ref_norms[s, :r], ref_len[s, :r], n_refs[s] = norms, lengths, r
            at += len(uniq)

        rows, codes, counts, h_len = gram_table(hyps, self.base)
        idf, gid = self._lookup(codes)
        return _score(rows, gid, codes % N_MAX, counts * idf, h_len, slot,
                      (ref_keys, ref_vals, ref_norms, ref_len, n_refs), G=G)


def _decode(code: int, base: int, words: dict[int, str]) -> str:
    n = int(code) % N_MAX + 1
    c = int(code) // N_MAX
    ids = []
    for _ in range(n):
        c, i = divmod(c, base)
        ids.append(i)
    return " ".join(words[i] for i in reversed(ids))


def _reference_tables(ref, gid, n_of, vals, lengths, n_refs, *, G: int) -> tuple:
    """Reference n-grams (ref = which reference sentence, numbered across slots in order; dense
    n-gram id < G; n - 1; tf-idf), reference lengths (in that order), references per slot (a
    hypothesis) -> keys (U,) sorted slot * G + id, tf-idf per reference (U, R), norms (S, R, 4),
    lengths (S, R)."""
    S, R = len(n_refs), max(int(n_refs.max(initial=0)), 1)
    owner = np.repeat(np.arange(S), n_refs)                                   # slot of each reference
    rank = np.arange(len(owner)) - (np.cumsum(n_refs) - n_refs)[owner]        # its index in the slot
    slot, idx = owner[ref], rank[ref]
    keys, col = np.unique(slot * G + gid, return_inverse=True)
    values = np.zeros((len(keys), R))
    values[col, idx] = vals                                                   # distinct per sentence
    norms = np.sqrt(np.bincount((slot * R + idx) * N_MAX + n_of, weights=vals ** 2,
                                minlength=S * R * N_MAX)).reshape(S, R, N_MAX)
    ref_len = np.zeros((S, R))
    ref_len[owner, rank] = lengths
    return keys, values, norms, ref_len, n_refs


def _score(rows, gid, n_of, vals, h_len, slot, tables, *, G: int) -> np.ndarray:
    """CIDEr-D of each hypothesis against its slot's references. Hypothesis n-grams: row, dense id
    (-1: no reference has it), n - 1, tf-idf; h_len (N,) lengths; slot (N,); tables as made by
    `_reference_tables`. Matching is one searchsorted of slot * G + id in the sorted keys."""
    ref_keys, ref_vals, ref_norms, ref_len, n_refs = tables
    N, R = len(h_len), ref_vals.shape[1]
    h_norms = np.sqrt(np.bincount(rows * N_MAX + n_of, weights=vals ** 2,
                                  minlength=N * N_MAX)).reshape(N, N_MAX)              # (N, 4)
    h_keys = slot[rows] * G + gid
    pos = np.minimum(np.searchsorted(ref_keys, h_keys), max(len(ref_keys) - 1, 0))
    hit = (gid >= 0) & (ref_keys[pos] == h_keys) if len(ref_keys) else np.zeros(len(gid), bool)
    vr = ref_vals[pos[hit]]                                                          # (F, R)
    clipped = np.minimum(vals[hit, None], vr) * vr                                   # (F, R)
    index = (rows[hit, None] * R + np.arange(R)) * N_MAX + n_of[hit, None]          # (F, R)
    overlap = np.bincount(index.ravel(), weights=clipped.ravel(),
                          minlength=N * R * N_MAX).reshape(N, R, N_MAX)
    denom = h_norms[:, None, :] * ref_norms[slot]                                    # (N, R, 4)
    sim = np.where(denom != 0, overlap / np.where(denom != 0, denom, 1.0), overlap)
    delta = h_len[:, None] - ref_len[slot]                                           # (N, R)
    per_ref = sim.mean(2) * np.exp(-(delta ** 2) / (2 * SIGMA ** 2))                 # (N, R)
    real = np.arange(R) < n_refs[slot][:, None]
    return (per_ref * real).sum(1) / np.maximum(n_refs[slot], 1) * 10.0
