"""Precompute conv maps of every image of a dic file (frozen CNN, eval transform) into a
memory-mapped cache, then train with `--cached_features <dir>` (no CNN at training time).

    python prepro/prepro_features.py --path_opt cfgs/normal_coco_res101.yml --out data/coco/feats_res101
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tqdm import tqdm

from misc.backbone import build_backbone
from misc.config import ConfigError, build_options
from misc.io import DataError, atomic_path, atomic_write_json, read_json
from misc.transforms import load_image, resize_with_boxes, to_tensor


def build_cache(opt, out: str | Path, batch_size: int = 16) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dic = read_json(opt.input_dic)
    device = torch.device("cuda" if opt.cuda and torch.cuda.is_available() else "cpu")
    torch.manual_seed(opt.seed)
    backbone = build_backbone(opt).to(device).eval()
    S = opt.image_crop_size
    with torch.no_grad():
        probe = backbone(torch.zeros(1, 3, S, S, device=device))
    shape = tuple(probe.shape[1:])
    n = len(dic["images"])
    sizes = []
    with atomic_path(out / "conv.npy") as tmp:
        conv = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, *shape))
        for s in tqdm(range(0, n, batch_size), desc="features"):
            batch = []
            for im in dic["images"][s:s + batch_size]:
                img = load_image(Path(opt.image_path) / im["file_path"])
                if img is None:
                    img_t = torch.zeros(3, S, S)
                    sizes.append([S, S])
                else:
                    sizes.append([img.width, img.height])
                    img_t = to_tensor(resize_with_boxes(img, S)[0])
                batch.append(img_t)
            with torch.no_grad():
                feats = backbone(torch.stack(batch).to(device))
            conv[s:s + len(batch)] = feats.float().cpu().numpy().astype(np.float16)
        conv.flush()
        del conv
    atomic_write_json(out / "meta.json", {"rows": n, "shape": list(shape), "sizes": sizes,
                                          "backbone": opt.cnn_backend, "image_crop_size": S})
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        i = argv.index("--out")
        out = argv[i + 1]
        del argv[i:i + 2]
    except (ValueError, IndexError):
        print("error: --out <directory> is required", file=sys.stderr)
        return 2
    try:
        opt = build_options(argv)
        print(f"wrote {build_cache(opt, out)}")
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
