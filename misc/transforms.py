"""Image loading and the box-aware resize / crop of the original (reference §1.6).

Train: resize to image_size x image_size (aspect not kept), random crop image_crop_size, boxes shifted
and clipped. Eval: resize straight to image_crop_size. ImageNet mean / std on RGB in [0, 1].
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
MAX_PIXELS = 8000 * 8000


def load_image(path: str | Path) -> Image.Image | None:
    """RGB image, any input mode (L, RGBA, P, 16-bit); None (with a warning) when unreadable."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                warnings.warn(f"skipping {path}: {im.width}x{im.height} is larger than allowed")
                return None
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                arr = (arr / max(float(arr.max()), 1.0) * 255).astype(np.uint8)
                im = Image.fromarray(arr, "L")
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        warnings.warn(f"skipping unreadable image {path}: {err}")
        return None


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
