"""Image loading and the box-aware resize / crop of the original.

Train: resize to image_size x image_size (aspect not kept), random crop image_crop_size, boxes shifted
and clipped. Eval: resize straight to image_crop_size. ImageNet mean / std on RGB in [0, 1].
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
MAX_PIXELS = 8000 * 8000


def load_image(path: str | Path | IO[bytes]) -> Image.Image | None:
    """The one image reader (training, prepro, demo, API, web): a file path or an open binary file
    -> upright RGB (`to_rgb`); None, with a warning naming the file, when it cannot be used."""
    try:
        return open_image(path)
    except ValueError as err:
        warnings.warn(f"skipping {path}: {err}")
        return None


def open_image(path: str | Path | IO[bytes]) -> Image.Image:
    """load_image that raises ValueError (a one-line reason) instead of warning."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{im.width}x{im.height} pixels is more than the {MAX_PIXELS} allowed")
            im.load()
            return to_rgb(im)
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, Image.UnidentifiedImageError) or "cannot identify" in reason:
            reason = "not an image file Pillow can read (JPEG, PNG, TIFF, BMP, GIF, WebP ...)"
        raise ValueError(f"unreadable image ({reason})") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL image -> upright 8-bit RGB.

    - EXIF orientation applied (a phone photo stored sideways with tag 6 is turned upright).
    - 16- and 32-bit integer greys (I;16, I) scaled by their maximum; 32-bit float (F, as in
      scientific TIFFs) min-max scaled to 0..255 (read as-is, values in 0..1 would all be black);
      non-finite float pixels become the minimum; an image with no finite pixel is a ValueError.
    - Transparency composited on white (RGBA, LA, P with transparency); everything else
      converted by PIL. A malformed EXIF block leaves the pixels as stored."""
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:            # a malformed EXIF block (struct / key / type errors): pixels as stored
        pass
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        im = Image.fromarray((arr / max(float(arr.max()), 1.0) * 255).clip(0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(arr)
        if not finite.any():
            raise ValueError("a float image with no finite pixel value")
        lo, hi = float(arr[finite].min()), float(arr[finite].max())
        arr = np.where(finite, arr, lo)
        arr = (arr - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(arr)
        im = Image.fromarray(arr.round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
    return (arr - IMAGENET_MEAN) / IMAGENET_STD          # (3, H, W)


def scale_boxes(boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
    out = boxes.copy()
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    return out


def resize_with_boxes(img: Image.Image, size: int, *box_sets: np.ndarray):
    """Resize to size x size; every (N, >=4) box array is scaled the same way."""
    sx, sy = size / img.width, size / img.height
    out = img.resize((size, size), Image.BILINEAR)
    return (out, *[scale_boxes(b, sx, sy) for b in box_sets])


def crop_with_boxes(img: Image.Image, x0: int, y0: int, size: int, *box_sets: np.ndarray):
    """Crop (x0, y0, size); boxes shifted and clipped to the crop (zero-area ones keep area 0)."""
    out = img.crop((x0, y0, x0 + size, y0 + size))
    shifted = []
    for b in box_sets:
        b = b.copy()
        b[:, [0, 2]] = np.clip(b[:, [0, 2]] - x0, 0, size - 1)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]] - y0, 0, size - 1)
        shifted.append(b)
    return (out, *shifted)


def box_area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) -> (N, M), continuous coordinates (no +1 pixel)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-9)).astype(np.float32)
