"""COCO at full size on a CPU: a synthetic dataset of COCO's dimensions, and what the data path
costs on it (issue 14). Not part of CI; `tests/test_coco_scale.py` runs the same code on 2,000 images.

Data (generated once into --data, reused while its parameters match):
    dataset_coco.json       Karpathy format, 123,287 images x 5 captions: coco-mini's real caption
                            sentences, resampled, with 18 % of their content words replaced by
                            pseudo-words drawn from a Zipf law, so that the training split has a
                            vocabulary of about 9,500 words seen more than 5 times (COCO: 9,487)
    instances_{train,val}2014.json   COCO instances: each image copies the boxes of the coco-mini
                            image its captions came from (jittered, 85 % kept: ~900k boxes), with
                            12-point polygons so the file is as heavy to parse as COCO's
    coco_detection.h5       123,287 x 100 rows in misc/detector.write_h5's layout: jittered GT
                            boxes with high scores, the rest random boxes with low scores
    images_*/               fake JPEGs on demand: symlinks of every file path to a small pool

Measured, each step in a fresh child process (peak RSS from wait4, i.e. the kernel's maxrss):
    prepro      prepro/prepro_dic_coco.py on the Karpathy json (time, peak RSS)
    startup     DataBundle.load, twice (the second finds whatever the first cached)
    workers     one pass over every training image's captions and targets through a DataLoader
                with 2 forked workers (64 px fake JPEGs): each worker's private memory (USS =
                Private_Clean + Private_Dirty of /proc/self/smaps_rollup) against the images it read
    loader      loader images/s at COCO size (640 x 480 JPEGs -> 576 -> crop 512, 100 proposals),
                0 and 2 workers

    python benchmarks/coco_scale.py [--data /tmp/nbt_coco_scale] [--code DIR ...] [--only startup,workers]

`--code` runs the children against other checkouts of the repository (e.g. a `git worktree` of the
commit before a change), one after the other in the same run, so before / after sit side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data/coco-mini next to the checkout (one level further up from a git worktree)
COCO_MINI = next((p / "shared" / "data" / "coco-mini" for p in ROOT.parents[:2]
                  if (p / "shared" / "data" / "coco-mini").is_dir()), ROOT.parent / "shared" / "data" / "coco-mini")
CLASS_FILE = ROOT / "data" / "coco" / "coco_class_name.txt"
KARPATHY = {"train": 82_783, "restval": 30_504, "val": 5_000, "test": 5_000}     # 123,287 images
GEN_VERSION = 3


# -- generation ------------------------------------------------------------------------------
def _tokenize(text: str) -> list[str]:
    import re
    return re.findall(r"[a-z0-9']+", text.lower())


def _source_images(coco_mini: Path) -> list[dict]:
    """coco-mini's 159 annotated images: size, 5 tokenised captions, boxes (x, y, w, h, category id)."""
    out = []
    for split in ("train2017", "val2017"):
        caps = json.loads((coco_mini / "annotations" / f"captions_{split}.json").read_text())
        inst = json.loads((coco_mini / "annotations" / f"instances_{split}.json").read_text())
        by_id = {im["id"]: {"w": im["width"], "h": im["height"], "caps": [], "boxes": []} for im in caps["images"]}
        for a in caps["annotations"]:
            by_id[a["image_id"]]["caps"].append(_tokenize(a["caption"]))
        for a in inst["annotations"]:
            if a["image_id"] in by_id and not a.get("iscrowd"):
                by_id[a["image_id"]]["boxes"].append([*a["bbox"], a["category_id"]])
        out.extend(by_id[k] for k in sorted(by_id))
    return out


def _categories(coco_mini: Path) -> list[dict]:
    inst = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    return inst["categories"]


def _pseudo_words(n: int, taken: set[str]) -> list[str]:
    """n distinct pronounceable non-words ('bakozu'), none of them in `taken`."""
    cons, vow = "bdfgklmnprstvz", "aeiou"
    syl = [c + v for c in cons for v in vow]                                 # 70 syllables
    out, k = [], 70 * 70
    while len(out) < n:
        a, r = divmod(k, 70 * 70)
        b, c = divmod(r, 70)
        w = syl[a % 70] + syl[b] + syl[c] + ("n" if a >= 70 else "")
        if w not in taken:
            out.append(w)
        k += 1
    return out


def _class_words(path: Path) -> set[str]:
    words = set()
    for line in path.read_text().splitlines():
        for w in line.split(","):
            for part in w.strip().lower().split():
                words |= {part, part + "s", part + "es", part[:-1] + "ies", part[:-1] + "ves"}
    return words | {"people", "men", "women", "children", "mice", "teeth", "feet"}


def generate_captions(sources: list[dict], n_images: int, rng: np.random.Generator, *,
                      replace_prob: float = 0.18, n_pseudo: int = 25_000, zipf_s: float = 1.0) -> list[list[list[str]]]:
    """Per image, the 5 captions of a random coco-mini image with some content words replaced."""
    keep = _class_words(CLASS_FILE) | {"a", "an", "the", "of", "on", "in", "with", "and", "is", "are", "to",
                                       "at", "near", "next", "two", "three", "some", "her", "his", "their"}
    real = {t for s in sources for c in s["caps"] for t in c}
    pseudo = _pseudo_words(n_pseudo, real | keep)
    cdf = np.cumsum(1.0 / np.arange(1, n_pseudo + 1) ** zipf_s)
    cdf /= cdf[-1]
    src = rng.integers(0, len(sources), n_images)
    out = []
    for s in src:
        caps = []
        for c in sources[s]["caps"][:5]:
            u = rng.random(len(c))
            swap = [i for i, t in enumerate(c) if u[i] < replace_prob and t not in keep and t.isalpha()]
            if swap:
                c = list(c)
                for i, j in zip(swap, np.searchsorted(cdf, rng.random(len(swap)))):
                    c[i] = pseudo[int(j)]
            caps.append(c)
        out.append(caps)
    return out, src


def _splits(n_images: int) -> list[tuple[str, str]]:
    """(Karpathy split, COCO 2014 folder) per image, in COCO's proportions."""
    total = sum(KARPATHY.values())
    counts = {k: round(v * n_images / total) for k, v in KARPATHY.items()}
    counts["train"] += n_images - sum(counts.values())
    out = [("train", "train2014")] * counts["train"] + [("restval", "val2014")] * counts["restval"]
    return out + [("val", "val2014")] * counts["val"] + [("test", "val2014")] * counts["test"]


def _write_instances(path: Path, images: list[dict], anns, categories: list[dict]) -> None:
    """Streamed COCO instances json (the annotation list would cost ~1 GB as Python dicts)."""
    from nbt.misc.io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write('{"info": {"description": "nbt synthetic COCO-scale"}, "images": ')
        f.write(json.dumps(images))
        f.write(', "annotations": [')
        first = True
        for a in anns:
            f.write(("" if first else ", ") + json.dumps(a, separators=(", ", ": ")))
            first = False
        f.write('], "categories": ' + json.dumps(categories) + "}")


def _annotations(boxes: np.ndarray, owner: np.ndarray, image_ids: np.ndarray, start_id: int):
    """(N, 5) x y w h category rows -> COCO annotation dicts with 12-point polygons."""
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for k, (x, y, w, h, cat) in enumerate(boxes.tolist()):
        cx, cy = x + w / 2, y + h / 2
        poly = np.stack([cx + w / 2 * np.cos(angles), cy + h / 2 * np.sin(angles)], 1).round(2).ravel().tolist()
        yield {"segmentation": [poly], "area": round(w * h * 0.78, 2), "iscrowd": 0,
               "image_id": int(image_ids[owner[k]]), "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
               "category_id": int(cat), "id": start_id + k}


def generate(out: str | Path, n_images: int = sum(KARPATHY.values()), seed: int = 0, *,
             coco_mini: Path = COCO_MINI, quiet: bool = False) -> Path:
    """Write the synthetic dataset into `out` (skipped when a matching one is there)."""
    out = Path(out)
    params = {"version": GEN_VERSION, "n_images": n_images, "seed": seed}
    stamp = out / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    sources = _source_images(coco_mini)
    captions, src = generate_captions(sources, n_images, rng)
    splits = _splits(n_images)
    image_ids = np.arange(n_images, dtype=np.int64) * 3 + 9          # unique, not row numbers
    images = []
    for i, ((split, folder), caps) in enumerate(zip(splits, captions)):
        name = f"COCO_{folder}_{image_ids[i]:012d}.jpg"
        images.append({"filepath": folder, "filename": name, "imgid": i, "split": split,
                       "cocoid": int(image_ids[i]), "sentids": list(range(5 * i, 5 * i + len(caps))),
                       "sentences": [{"tokens": c, "raw": " ".join(c).capitalize() + ".", "imgid": i,
                                      "sentid": 5 * i + j} for j, c in enumerate(caps)]})
    from nbt.misc.io import atomic_write_json
    atomic_write_json(out / "dataset_coco.json", {"images": images, "dataset": "coco"})
    del images, captions
    if not quiet:
        print(f"  captions: {time.perf_counter() - t0:.0f}s", flush=True)
    # boxes: copies of the source image's boxes, jittered, 85 % kept
    per_src = [np.array(s["boxes"], np.float64).reshape(-1, 5) for s in sources]
    owner = np.concatenate([np.full(len(per_src[s]), i) for i, s in enumerate(src)])
    boxes = np.concatenate([per_src[s] for s in src])
    keep = rng.random(len(boxes)) < 0.85
    owner, boxes = owner[keep], boxes[keep]
    sizes = np.array([[sources[s]["w"], sources[s]["h"]] for s in src], np.float64)
    boxes[:, :4] *= rng.uniform(0.95, 1.05, (len(boxes), 4))
    for k in (0, 1):                                       # inside the image, at least 1 px
        boxes[:, k] = np.clip(boxes[:, k], 0, sizes[owner, k] - 2)
        boxes[:, k + 2] = np.clip(boxes[:, k + 2], 1, sizes[owner, k] - boxes[:, k])
    categories = _categories(coco_mini)
    for folder in ("train2014", "val2014"):
        mine = np.array([f == folder for _, f in splits])
        sel = mine[owner]
        ims = [{"id": int(image_ids[i]), "width": int(sizes[i, 0]), "height": int(sizes[i, 1]),
                "file_name": f"COCO_{folder}_{image_ids[i]:012d}.jpg"} for i in np.nonzero(mine)[0]]
        start = 1 if folder == "train2014" else 1 + int(sel.size)
        _write_instances(out / f"instances_{folder}.json", ims,
                         _annotations(boxes[sel], owner[sel], image_ids, start), categories)
    if not quiet:
        print(f"  instances ({len(boxes)} boxes): {time.perf_counter() - t0:.0f}s", flush=True)
    _write_detections(out / "coco_detection.h5", boxes, owner, sizes, categories, rng)
    atomic_write_json(out / "dataset_info.json", {"boxes": int(len(boxes)), "images": n_images,
                                                  "sizes": sizes.astype(int).tolist()})
    stamp.write_text(json.dumps(params))
    if not quiet:
        print(f"  generated {out} in {time.perf_counter() - t0:.0f}s", flush=True)
    return out


def _write_detections(path: Path, boxes, owner, sizes, categories, rng, max_det: int = 100) -> None:
    """Per image: its GT boxes jittered (score 0.5-1) and random boxes (score 0.05-0.5), by score."""
    from nbt.misc.detector import write_h5
    from nbt.misc.vocab import ClassNames
    names = ClassNames.read(CLASS_FILE).names
    cat_to_cls = {c["id"]: names.index(c["name"]) + 1 for c in categories if c["name"] in names}
    n = len(sizes)
    dets = np.zeros((n, max_det, 6), np.float32)
    wh = sizes[:, None, :]
    xy = rng.random((n, max_det, 2)) * wh * 0.8
    dets[..., 0:2] = xy
    dets[..., 2:4] = xy + rng.uniform(0.05, 0.5, (n, max_det, 2)) * wh
    dets[..., 4] = rng.integers(1, len(names) + 1, (n, max_det))
    dets[..., 5] = rng.uniform(0.05, 0.5, (n, max_det))
    slot = np.zeros(len(owner), np.int64)                  # k-th GT box of its image -> detection row k
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(n))
    slot[order] = np.arange(len(owner)) - starts[owner[order]]
    ok = slot < max_det
    o, s, b = owner[ok], slot[ok], boxes[ok]
    jitter = rng.uniform(-0.05, 0.05, (len(b), 4)) * b[:, [2, 3, 2, 3]]
    dets[o, s, 0:2] = b[:, 0:2] + jitter[:, :2]
    dets[o, s, 2:4] = b[:, 0:2] + b[:, 2:4] + jitter[:, 2:]
    dets[o, s, 4] = [cat_to_cls.get(int(c), 1) for c in b[:, 4]]
    dets[o, s, 5] = rng.uniform(0.5, 1.0, len(b))
    dets = np.take_along_axis(dets, np.argsort(-dets[..., 5], axis=1)[..., None], axis=1)
    write_h5(path, list(dets), max_det=max_det)


def ensure_images(data: Path, rows: list[int] | None = None, pool: int = 4) -> Path:
    """Fake JPEGs on demand: `data/images/<file_path>` of the dic rows asked for, as symlinks to a
    few random pictures of the image's own size (the loader scales boxes by the JPEG's size)."""
    from PIL import Image, ImageDraw
    root = data / "images"
    dic = json.loads((data / "dic_coco.json").read_text())
    sizes = json.loads((data / "dataset_info.json").read_text())["sizes"]
    rng = np.random.default_rng(1)
    for row in range(len(dic["images"])) if rows is None else rows:
        link = root / dic["images"][row]["file_path"]
        if link.is_symlink():
            continue
        w, h = sizes[row]
        target = root / "_pool" / f"{w}x{h}_{row % pool}.jpg"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
            d = ImageDraw.Draw(im)
            for _ in range(12):
                x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
                d.rectangle([x, y, x + w // 4, y + h // 4], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            im.save(target, quality=90)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    return root


# -- options ----------------------------------------------------------------------------------
def coco_options(data: Path, code: Path, **overrides):
    from nbt.misc.config import build_options
    opt = build_options(["--path_opt", str(code / "cfgs" / "normal_coco_res101.yml")])
    import dataclasses
    values = dict(input_json=str(data / "cap_coco.json"), input_dic=str(data / "dic_coco.json"),
                  image_path=str(data / "images"), proposal_h5=str(data / "coco_detection.h5"),
                  instances_json=[str(data / "instances_train2014.json"), str(data / "instances_val2014.json")],
                  class_name_file=str(CLASS_FILE), cached_tokens=str(data / "coco-train-df.json"),
                  cnn_backend="tiny", pretrained_cnn=False, cuda=False, seq_length=16)
    values.update(overrides)
    return dataclasses.replace(opt, **values)


def prepro_args(data: Path) -> list[str]:
    return ["--input_json", str(data / "dataset_coco.json"), "--class_name_file", str(CLASS_FILE),
            "--split", "normal", "--output_dic", str(data / "dic_coco.json"),
            "--output_cap", str(data / "cap_coco.json"), "--output_df", str(data / "coco-train-df.json")]


# -- children (run in a fresh process, against the checkout named by NBT_CODE) ------------------
def _status(key: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def uss(pid: str | int = "self") -> int:
    """Private memory of a process (Private_Clean + Private_Dirty), bytes."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1]) * 1024
    return total


def child_startup(data: Path, code: Path) -> dict:
    from nbt.misc.dataset import DataBundle
    opt = coco_options(data, code)
    rss0 = _status("VmRSS")
    t, cpu = time.perf_counter(), time.process_time()
    bundle = DataBundle.load(opt)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    import gc
    gc.collect()
    n_train = len(bundle.rows("train"))
    return {"seconds": seconds, "cpu": cpu, "rss_before": rss0, "rss_after": _status("VmRSS"), "peak": _status("VmHWM"),
            "train_images": n_train}


class _Probe:
    """Collate that runs the real collate in the worker, then reports the worker's USS."""

    def __call__(self, items):
        from nbt.misc.dataset import collate
        batch = collate(items)
        return {"pid": os.getpid(), "n": len(batch["image_ids"]) if "image_ids" in batch else 0,
                "uss": uss(), "cpu": time.process_time(), "visual": batch.get("n_visual", 0), "grounded": batch.get("n_grounded", 0)}


def child_workers(data: Path, code: Path, workers: int = 2, batch_size: int = 50, max_images: int = -1) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from nbt.misc.dataset import CaptionDataset, DataBundle, EpochBatchSampler
    opt = coco_options(data, code, image_size=72, image_crop_size=64)
    bundle = DataBundle.load(opt)
    ds = CaptionDataset(bundle, "train", train=True, max_images=max_images)
    sampler = EpochBatchSampler(len(ds), batch_size, shuffle=True, seed=opt.seed)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=_Probe(), num_workers=workers,
                        generator=torch.Generator().manual_seed(opt.seed))
    t = time.perf_counter()
    trace: dict[int, list[tuple[int, int]]] = {}
    seen = visual = grounded = 0
    for b in loader:
        pts = trace.setdefault(b["pid"], [])
        pts.append(((pts[-1][0] if pts else 0) + b["n"], b["uss"], b["cpu"]))
        seen += b["n"]
        visual += b["visual"]
        grounded += b["grounded"]
    seconds = time.perf_counter() - t
    per_worker = {}
    for pid, pts in trace.items():
        n = np.array([p[0] for p in pts], np.float64)
        m = np.array([p[1] for p in pts], np.float64)
        half = n >= n[-1] / 2
        slope = float(np.polyfit(n[half], m[half], 1)[0]) if half.sum() >= 2 else 0.0
        cpu_ms = 1e3 * (pts[-1][2] - pts[0][2]) / max(n[-1] - n[0], 1)
        per_worker[str(pid)] = {"images": int(n[-1]), "uss_first": int(m[0]), "uss_last": int(m[-1]),
                                "slope_bytes_per_image": slope, "cpu_ms_per_image": cpu_ms,
                                "trace": [[int(a), int(b)] for a, b, _ in pts[:: max(1, len(pts) // 20)]]}
    return {"seconds": seconds, "images": seen, "images_per_s": seen / seconds, "workers": per_worker,
            "main_rss": _status("VmRSS"), "main_peak": _status("VmHWM"),
            "visual_words": visual, "grounded": grounded}


def child_loader(data: Path, code: Path, workers: int, images: int = 300, batch_size: int = 20) -> dict:
    from nbt.misc.dataset import CaptionDataset, DataBundle
    from nbt.misc.trainer import make_loader
    opt = coco_options(data, code, num_workers=workers, batch_size=batch_size)
    bundle = DataBundle.load(opt)
    ds = CaptionDataset(bundle, "train", train=True, max_images=images)
    loader = make_loader(ds, opt, shuffle=True)
    it = iter(loader)
    first = next(it)                                   # workers started, first batch ready
    t, cpu = time.perf_counter(), _cpu_with_children()
    seen = 0
    for batch in it:
        seen += batch["images"].shape[0]
    seconds = time.perf_counter() - t
    del it, loader                                     # workers exit: their CPU time is counted
    cpu = _cpu_with_children() - cpu
    return {"images": seen, "seconds": seconds, "images_per_s": seen / seconds, "cpu_ms_per_image": 1e3 * cpu / seen,
            "batch_shape": list(first["images"].shape), "proposals": list(first["proposals"].shape)}


def _cpu_with_children() -> float:
    """CPU seconds of this process and of its waited-for children (the DataLoader workers)."""
    import gc
    import resource
    gc.collect()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


CHILDREN = {"startup": child_startup, "workers": child_workers, "loader": child_loader}


def run_child(code: Path, data: Path, name: str, **kwargs) -> dict:
    """Run one measurement in a fresh process on checkout `code`; add its wall time and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--data", str(data),
           "--code", str(code), "--kwargs", json.dumps(kwargs)]
    return _spawn(cmd, code)


def _spawn(cmd: list[str], code: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code), NBT_CODE=str(code), PYTHONWARNINGS="ignore")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=str(code), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed:\n{err[-3000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"stdout": out[-500:]}
    result["wall"] = wall
    return result


def run_prepro(code: Path, data: Path) -> dict:
    """prepro_dic_coco.py in a child: wall time and peak RSS (ru_maxrss of that child)."""
    import tempfile
    cmd = [sys.executable, str(code / "prepro" / "prepro_dic_coco.py"), *prepro_args(data)]
    env = dict(os.environ, PYTHONPATH=str(code))
    with tempfile.TemporaryFile("w+") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=str(code), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        log.seek(0)
        out = log.read()
    if status != 0:
        raise RuntimeError(f"prepro failed:\n{out[-3000:]}")
    lines = [ln for ln in out.replace("\r", "\n").splitlines() if ln.strip()]
    return {"seconds": wall, "peak": usage.ru_maxrss * 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "log": lines[-1] if lines else ""}


# -- the benchmark ------------------------------------------------------------------------------
def measure(code: Path, data: Path, steps: list[str], loader_images: int) -> dict:
    res: dict = {"code": str(code)}
    if "prepro" in steps or not (data / "dic_coco.json").is_file():
        res["prepro"] = run_prepro(code, data)
        print(f"  prepro {res['prepro']['seconds']:.1f}s (CPU {res['prepro']['cpu']:.1f}s), peak {res['prepro']['peak'] / 2**30:.2f} GiB "
              f"({res['prepro']['log']})", flush=True)
    if "workers" in steps or "loader" in steps:
        ensure_images(data)
    if "startup" in steps:
        res["startup"] = [run_child(code, data, "startup") for _ in range(2)]
        for k, s in enumerate(res["startup"]):
            print(f"  start-up {k + 1}: DataBundle.load {s['seconds']:.1f}s (CPU {s['cpu']:.1f}s), RSS after {s['rss_after'] / 2**30:.2f} GiB, "
                  f"peak {s['peak'] / 2**30:.2f} GiB (process incl. imports {s['wall']:.1f}s)", flush=True)
    if "workers" in steps:
        w = run_child(code, data, "workers")
        res["workers"] = w
        for pid, v in w["workers"].items():
            print(f"  worker {pid}: {v['images']} images, USS {v['uss_first'] / 2**20:.0f} -> "
                  f"{v['uss_last'] / 2**20:.0f} MiB, slope {v['slope_bytes_per_image'] / 1024:.2f} KiB/image, "
                  f"{v['cpu_ms_per_image']:.2f} CPU ms/image", flush=True)
        print(f"  full pass: {w['images']} images in {w['seconds']:.0f}s ({w['images_per_s']:.0f}/s), main RSS "
              f"{w['main_rss'] / 2**30:.2f} GiB; grounded {w['grounded']}/{w['visual_words']} visual words", flush=True)
    return res


def measure_loader(codes: list[Path], data: Path, images: int, repeat: int) -> dict:
    """Loader images/s with 0 and 2 workers; checkouts alternate, so a busy machine slows all alike."""
    runs: dict = {str(c): {"0": [], "2": []} for c in codes}
    for _ in range(repeat):
        for n in (0, 2):
            for code in codes:
                v = run_child(code, data, "loader", workers=n, images=images)
                runs[str(code)][str(n)].append(v)
                print(f"  [{code.name}] loader, {n} workers: {v['images_per_s']:.1f} images/s, "
                      f"{v['cpu_ms_per_image']:.1f} CPU ms/image ({v['images']} images, batch {v['batch_shape']})",
                      flush=True)
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/tmp/nbt_coco_scale", help="folder of the synthetic dataset")
    p.add_argument("--images", type=int, default=sum(KARPATHY.values()))
    p.add_argument("--code", nargs="*", default=[str(ROOT)], help="checkouts to measure (default: this one)")
    p.add_argument("--only", default="prepro,startup,workers,loader", help="comma-separated steps")
    p.add_argument("--loader_images", type=int, default=300)
    p.add_argument("--loader_repeat", type=int, default=1, help="loader measurements per checkout (alternating)")
    p.add_argument("--out", default="", help="write the results as JSON here")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--kwargs", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    data = Path(args.data)
    if args.child:
        code = Path(args.code[0])
        from other_checkout import bind
        bind(code)
        import warnings

        import torch
        torch.set_num_threads(1)
        warnings.simplefilter("ignore")
        print(json.dumps(CHILDREN[args.child](data, code, **json.loads(args.kwargs))))
        return 0
    t0 = time.perf_counter()
    print(f"generating {args.images} images into {data} (reused when present)", flush=True)
    sys.path.insert(0, str(ROOT))
    import _checkout  # noqa: F401  (`nbt` = this checkout)
    generate(data, args.images)
    steps = args.only.split(",")
    results = {"images": args.images, "data": str(data), "runs": []}
    codes = [Path(c).resolve() for c in args.code]
    for code in codes:
        print(f"[{code}]", flush=True)
        results["runs"].append(measure(code, data, steps, args.loader_images))
    if "loader" in steps:
        results["loader"] = measure_loader(codes, data, args.loader_images, args.loader_repeat)
    results["seconds"] = time.perf_counter() - t0
    print(f"total {results['seconds'] / 60:.1f} min")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
