"""One checkpoint dict per file, written atomically and loaded with weights_only=True.

Keys: model, optimizer, scaler, epoch, batch_in_epoch, iteration, rng, config, fingerprint,
classes, best_score, history. RNG states are stored as tensors / plain lists (weights_only-safe).
A converted model of the original (misc/original_checkpoint.py) has model, config, fingerprint,
classes and `vocabulary` (its words and class list, which it carries itself) only; the original's
own pair (model-best.pth + infos_<id>-best.pkl) is converted when loaded.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from nbt.misc.io import DataError, atomic_path
from nbt.misc.language import language_for
from nbt.misc.original_checkpoint import is_original_state_dict, load_original
from nbt.misc.vocab import ClassNames, Vocabulary
from nbt.misc.weights import UnreadableFile, load_weights_only


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
            "python": _py_state_to_list(random.getstate())}

def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))

def _py_state_to_list(s):
    return [s[0], list(s[1]), s[2]]

def save_checkpoint(path: str | Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)

def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        for name in ("model-best.pth", "model.pth"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        raise DataError(f"no checkpoint at {path} (expected model-best.pth or model.pth)")
    if path.stat().st_size == 0:
        raise DataError(f"cannot load checkpoint {path}: the file is empty")
    try:
        ckpt = load_weights_only(path)
    except UnreadableFile as err:
        raise DataError(f"cannot load checkpoint {path}: {err}") from None
    if is_original_state_dict(ckpt):
        ckpt = load_original(path, ckpt)
    validate_checkpoint(ckpt, path)
    return ckpt

def checkpoint_vocabulary(ckpt: dict) -> tuple[dict, ClassNames, Vocabulary] | None:
    """(dic, classes, vocabulary) of a checkpoint that carries its own (a converted model of the
    original); None for this project's checkpoints, whose config names their dic and class files."""
    voc = ckpt.get("vocabulary")
    if voc is None:
        return None
    classes = ClassNames(tuple(voc["classes"]), tuple(tuple(w) for w in voc["class_words"]))
    dic = {"ix_to_word": voc["ix_to_word"], "held_out": voc.get("held_out", []), "images": []}
    language = language_for(voc.get("language", "en"), classes)       # the original's models are English
    return dic, classes, Vocabulary(voc["ix_to_word"], classes, voc.get("plural_of"), language)

def validate_checkpoint(ckpt, path: str | Path) -> None:
    """A checkpoint of this project is a dict holding the model's state dict under 'model' and its
    options under 'config'; a bare state dict (torch.save(model.state_dict())), a list or any other
    object is a one-line DataError."""
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: not a checkpoint of this project (a {type(ckpt).__name__}, expected a dict "
                        "with 'model' and 'config')")
    missing = [k for k in ("model", "config") if k not in ckpt]
    if missing:
        bare = ckpt and all(torch.is_tensor(v) for v in ckpt.values())
        what = "a bare state dict" if bare else f"a dict without {' and '.join(repr(k) for k in missing)}"
        raise DataError(f"{path}: not a checkpoint of this project ({what}; it needs 'model' and 'config', "
                        "as main.py writes them)")
    if not isinstance(ckpt["model"], dict) or not isinstance(ckpt["config"], dict):
        raise DataError(f"{path}: malformed checkpoint ('model' and 'config' must be dicts)")

def check_compatible(ckpt: dict, fingerprint: str, classes: list[str], where: str) -> None:
    """A checkpoint only fits data with the same vocabulary and class list (the original silently
    produced "a [knapstack] riding a [aircraft]")."""
    if list(ckpt.get("classes", classes)) != list(classes):
        raise DataError(f"{where}: checkpoint was trained with another class list "
                        f"({len(ckpt['classes'])} classes, data has {len(classes)})")
    if ckpt.get("fingerprint") and ckpt["fingerprint"] != fingerprint:
        raise DataError(f"{where}: checkpoint vocabulary {ckpt['fingerprint']} differs from the data's "
                        f"{fingerprint}; use the dic file it was trained with")
