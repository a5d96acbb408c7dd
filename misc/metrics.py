"""coco-caption metrics through pycocoevalcap (PyPI), Python 3, no sys.path hacks.

BLEU-1..4, METEOR, ROUGE-L, CIDEr (document frequencies from the references, 'corpus' mode), and
SPICE when its Stanford CoreNLP jars are present. Java is needed for the PTB tokenizer and METEOR:
without it, captions are tokenized in Python and METEOR is reported as skipped.

Captions in another language come with their language's `segmenter` (misc/language.py): Chinese
captions are scored on their segmented tokens, as AI Challenger's official evaluation scores jieba's
segmentation with these same scorers (its PTB step only splits the segmented text on spaces and
drops punctuation, which `pre_segmented` does without Java).
"""
from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from pathlib import Path


def java_available() -> bool:
    return shutil.which("java") is not None


def spice_available() -> bool:
    try:
        import pycocoevalcap.spice as sp
    except ImportError:
        return False
    lib = Path(sp.__file__).parent / "lib"
    return any(lib.glob("stanford-corenlp-*models*.jar"))


def simple_tokenize(text: str) -> str:
    """Without Java: spaCy's rules (misc.vocab.tokenize), which split and drop punctuation as PTB does."""
    from nbt.misc.vocab import tokenize as words
    return " ".join(words(text))


def tokenize(captions: dict) -> dict:
    """{id: [str]} -> {id: [tokenized str]} (PTB tokenizer when Java exists)."""
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
    return {k: [simple_tokenize(c) for c in v] for k, v in captions.items()}


def _compute_quietly(scorer, gts: dict, res: dict):
    """scorer.compute_score without pycocoevalcap's prints (BLEU's length counts) and without the
    pipes its METEOR leaves open (its __del__ closes stdin only: ResourceWarnings)."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = scorer.compute_score(gts, res)
    proc = getattr(scorer, "meteor_p", None)
    if proc is not None:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return out


def score_captions(refs: dict, hyps: dict, *, meteor: bool = True, spice: bool = False,
                   pretokenized: bool = False, segmenter=None) -> tuple[dict, dict]:
    """refs {id: [str, ...]}, hyps {id: str} -> (overall {metric: value}, per image {id: {metric: v}}).
    segmenter: str -> tokens of the captions' language (None: English, the PTB tokenizer)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    missing = [k for k in hyps if k not in refs]
    if missing:
        raise ValueError(f"{len(missing)} predictions have no references (e.g. image {missing[0]})")
    ids = list(hyps)
    gts = {k: list(refs[k]) for k in ids}
    res = {k: [hyps[k]] for k in ids}
    if segmenter is not None:
        gts = {k: [" ".join(segmenter(c)) for c in v] for k, v in gts.items()}
        res = {k: [" ".join(segmenter(c)) for c in v] for k, v in res.items()}
    elif not pretokenized:
        gts, res = tokenize(gts), tokenize(res)

    scorers = [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]
    skipped = []
    if meteor and java_available():
        from pycocoevalcap.meteor.meteor import Meteor
        scorers.insert(1, (Meteor(), "METEOR"))
    elif meteor:
        skipped.append("METEOR")
    if spice and spice_available() and java_available():
        from pycocoevalcap.spice.spice import Spice
        scorers.append((Spice(), "SPICE"))
    elif spice:
        skipped.append("SPICE")
    if skipped:
        warnings.warn(f"skipped {', '.join(skipped)} (needs Java / Stanford CoreNLP jars)")
    overall, per_image = {}, {k: {} for k in ids}
    for scorer, names in scorers:
        score, scores = _compute_quietly(scorer, gts, res)
        if isinstance(names, list):
            for n, s, ss in zip(names, score, scores):
                overall[n] = float(s)
                for k, v in zip(ids, ss):
                    per_image[k][n] = float(v)
        else:
            overall[names] = float(score)
            for k, v in zip(ids, scores):
                per_image[k][names] = float(v["All"]["f"]) if isinstance(v, dict) else float(v)
    for n in skipped:
        overall[n] = None
    return overall, per_image
