"""Cache the frozen CNN's region features of every dic image (misc/features.py), then train and
evaluate with `--cached_features <dir>`: the decoder only, no JPEG decode, CNN or RoIAlign.

One pass, evaluation transform (resize to image_crop_size, no crop): per image, the conv map (the
grid the decoder attends over) and the RoIAlign-pooled features of its proposals (the detection
h5, or the GT boxes with --det_oracle), float16 in one memory-mapped file. Size per image:
2 D (h w + R) + 24 R bytes; COCO with ResNet-101 at 512 px and R = max_proposal = 100:
1.39 MiB per image, 168 GiB for 123,287 images.

    python prepro/prepro_features.py --path_opt cfgs/normal_coco_res101.yml --out data/coco/feats_res101 \\
        [--dtype float32]      (twice the size; for features that overflow float16, which is refused)

Training from the cache sees the evaluation transform: no random crop (the image path with
image_size == image_crop_size gives the same batches).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

import numpy as np
import torch
from tqdm import tqdm

from nbt.misc.backbone import build_backbone
from nbt.misc.config import ConfigError, build_options, format_help, help_defaults
from nbt.misc.dataset import CaptionDataset, DataBundle
from nbt.misc.io import DataError, atomic_path, atomic_write_json
from nbt.misc.transforms import box_area, load_image, resize_with_boxes, to_tensor
from nbt.pooling.roi_align import pool_regions


def _load(ds: CaptionDataset, row: int, size: int):
    """(image tensor (3, S, S), proposals (n, 6) in crop pixels, (width, height)) of a dic row."""
    images = ds.b.dic["images"]
    img = load_image(Path(ds.opt.image_path) / images.file_path(row))
    if img is None:                    # unreadable: zero features, no proposals (the loader skips it)
        return torch.zeros(3, size, size), np.zeros((0, 6), np.float32), (size, size)
    resized, props = resize_with_boxes(img, size, ds.proposals(row, images.image_id(row)))
    props = props[box_area(props) > 0][: ds.opt.max_proposal]
    return to_tensor(resized), props.astype(np.float32), (img.width, img.height)


def build_cache(opt, out: str | Path, batch_size: int = 16, dtype=np.float16) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = CaptionDataset(DataBundle.load(opt), None, train=False, visual_slots=False)
    device = torch.device("cuda" if opt.cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(opt.seed)
    backbone = build_backbone(opt).to(device).eval()
    S, R, n = opt.image_crop_size, opt.max_proposal, len(ds)
    with torch.no_grad():
        D, h, w = backbone(torch.zeros(1, 3, S, S, device=device)).shape[1:]
    sizes, num = np.zeros((n, 2), np.int64), np.zeros(n, np.int64)
    with atomic_path(out / "features.npy") as tmp_f, atomic_path(out / "proposals.npy") as tmp_p:
        feats = np.lib.format.open_memmap(tmp_f, mode="w+", dtype=dtype, shape=(n, D, h * w + R))
        props = np.lib.format.open_memmap(tmp_p, mode="w+", dtype=np.float32, shape=(n, R, 6))
        for s in tqdm(range(0, n, batch_size), desc="features"):
            rows = range(s, min(s + batch_size, n))
            loaded = [_load(ds, r, S) for r in rows]
            boxes = torch.zeros(len(rows), R, 4)
            for k, (r, (_, p, size)) in enumerate(zip(rows, loaded)):
                boxes[k, :len(p)] = torch.from_numpy(p[:, :4])
                props[r, :len(p)], num[r], sizes[r] = p, len(p), size
            with torch.no_grad():
                conv = backbone(torch.stack([x for x, _, _ in loaded]).to(device)).float()   # (B, D, h, w)
                pooled = pool_regions(conv, boxes.to(device), backbone.stride, mode=opt.roi_align)   # (B, R, D)
            valid = torch.arange(R)[None] < torch.from_numpy(num[s:s + len(rows)])[:, None]      # (B, R)
            pooled = pooled * valid[..., None].to(device)                                     # zeros after n_i
            block = torch.cat([conv.flatten(2), pooled.transpose(1, 2)], 2).cpu().numpy()    # (B, D, h*w + R)
            with np.errstate(over="ignore"):
                fits = np.isfinite(block.astype(dtype)).all()
            if not fits:
                raise DataError(f"features of image rows {s}..{rows[-1]} do not fit {np.dtype(dtype).name} "
                                f"(largest {np.abs(block).max():.3g}); use --dtype float32")
            feats[s:s + len(rows)] = block
        feats.flush()
        props.flush()
        del feats, props
    atomic_write_json(out / "meta.json", {
        "rows": n, "channels": int(D), "grid": [int(h), int(w)], "regions": R, "num": num.tolist(),
        "sizes": sizes.tolist(), "backbone": opt.cnn_backend, "image_crop_size": S,
        "det_oracle": opt.det_oracle, "proposal_h5": "" if opt.det_oracle else str(opt.proposal_h5),
        "dtype": np.dtype(dtype).name})
    return out


def _pop(argv: list[str], flag: str, default: str | None = None) -> str | None:
    if flag not in argv:
        return default
    i = argv.index(flag)
    if i + 1 >= len(argv):
        raise ConfigError(f"{flag} needs a value")
    value = argv[i + 1]
    del argv[i:i + 2]
    return value


def main(argv=None) -> int:
    """Options as main.py's, plus --out DIR (required) and --dtype float16 | float32."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "-h" in argv or "--help" in argv:
            print(__doc__.strip() + "\n\nIts own options: --out DIR (required: the cache folder to write), --dtype "
                  "float16 | float32 (default float16). The others are main.py's:\n")
            print(format_help("prepro_features.py", "options as main.py's", help_defaults(argv, None)))
            return 0
        out = _pop(argv, "--out")
        dtype = _pop(argv, "--dtype", "float16")
        if not out:
            raise ConfigError("--out <directory> is required")
        if dtype not in ("float16", "float32"):
            raise ConfigError(f"--dtype: float16 or float32, not {dtype!r}")
        opt = build_options(argv)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            print(f"wrote {build_cache(opt, out, dtype=np.dtype(dtype))}")
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
