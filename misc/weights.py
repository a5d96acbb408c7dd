"""Pretrained weights of the CNN and the detector: a local file, or torchvision's weight enum.

The enum downloads its file once into the torch hub cache ($TORCH_HOME/hub/checkpoints, by default
~/.cache/torch/hub/checkpoints) and reads it from there afterwards, so an offline machine needs
either that cached file or a local file passed by flag. Every failure is one line (DataError)
naming what is missing and the flag or file that supplies it, never a download traceback.
"""
from __future__ import annotations

from pathlib import Path

import torch

from nbt.misc.io import DataError


def _first_line(err: BaseException) -> str:
    """The reason, in one line. torch's weights-only refusal starts with advice to load the file
    unsafely: never passed on (no code is run from a file here); its own reason is kept."""
    text = str(err).strip() or type(err).__name__
    if text.startswith("Weights only load failed"):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("Unsupported")), "")
        return "not a file of tensors torch.save wrote" + (f" (pickle: {reason})" if reason else "")
    return text.splitlines()[0]


class UnreadableFile(Exception):
    """torch.load could not read a file; the message is the first line of the reason."""


def load_weights_only(path: Path) -> object:
    """torch.load on the CPU with weights only (no code runs from the file); UnreadableFile for a
    file torch cannot read (pickle, zip and EOF errors come in many types)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UnreadableFile(_first_line(err)) from None


def read_state_dict(path: str | Path, *, what: str, flag: str) -> dict[str, torch.Tensor]:
    """A weights file: a state dict, or a checkpoint dict holding one under 'model'.
    `what` names the network ("Faster R-CNN"), `flag` the option that gave the path."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} weights not found: {path} (given by {flag})")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, not {what} weights (given by {flag})")
    try:
        state = load_weights_only(path)
    except UnreadableFile as err:
        raise DataError(f"{path}: not a readable weights file ({err}); "
                        f"{flag} needs a torch.save'd state dict of {what}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise DataError(f"{path}: not a state dict of {what} (a dict of tensors; given by {flag})")
    return state


def download_state_dict(weights, *, what: str, remedy: str) -> dict[str, torch.Tensor]:
    """torchvision enum member -> its state dict, from the hub cache or downloaded; offline and not
    cached, a DataError naming the file, where it would be cached and `remedy` (the flags)."""
    name = weights.url.rsplit("/", 1)[-1]
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        return weights.get_state_dict(progress=True, weights_only=True)
    except Exception as err:     # URLError, timeouts, HTTP errors, a truncated cached file ...
        raise DataError(f"no {what} weights: {name} is not in {cache} and cannot be downloaded "
                        f"({_first_line(err)}); {remedy}") from None
