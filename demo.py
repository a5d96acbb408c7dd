"""Caption images with their grounded boxes drawn.

    python demo.py                                   # world test images, the default run save/world
    python demo.py --cbs True                        # constrained beam search
    python demo.py --start_from save/coco --demo_path photos/ --detector_weights frcnn.pth
    python demo.py --start_from save/coco --demo_path img.jpg --demo_detections dets.json

Proposals: detections from a JSON file (coco-mini format); else, for images of the run's own data
set (same file or same pixels), the rows of its detection h5 (the built-in world's simulated
detector), and torchvision Faster R-CNN for any other image (NBTCaptioner.own_proposals).
Writes <demo_out>/<name>.jpg (coloured grounded boxes labelled with their words, grey other
proposals, the caption with [visual words] underneath), <demo_out>/<name>.json and visu.json.
"""
from __future__ import annotations

import colorsys
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from misc.config import ConfigError, Options, coerce, parse_cli
from misc.io import DataError, atomic_path, atomic_write_json, read_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEMO_KEYS = {"demo_path", "demo_out", "start_from", "beam_size", "cbs", "cbs_mode", "cbs_tag_size",
             "detector_weights", "demo_detections", "demo_max_images", "cuda"}


def palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct colours (golden-ratio hues): no fixed limit (the original's 6 crashed at 7)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)) for i in range(n)]


def draw(image: Image.Image, result: dict, min_width: int = 480) -> Image.Image:
    """The image (upscaled when small) with grey proposals, coloured grounded boxes labelled with
    their words, and the tagged caption wrapped underneath."""
    font = ImageFont.load_default()
    k = max(1.0, min_width / image.width)
    if k > 1:
        image = image.resize((round(image.width * k), round(image.height * k)), Image.BICUBIC)

    def box(b):
        return [v * k for v in b]
    probe = ImageDraw.Draw(image)
    lines, line = [], ""
    for word in result["tagged"].split():
        trial = f"{line} {word}".strip()
        if probe.textlength(trial, font=font) > image.width - 8 and line:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    canvas = Image.new("RGB", (image.width, image.height + 14 * len(lines) + 10), "white")
    canvas.paste(image, (0, 0))
    d = ImageDraw.Draw(canvas)
    grounded = {tuple(g["box"]) for g in result["grounding"]}
    for p in result["proposals"]:
        if tuple(p["box"]) not in grounded:
            d.rectangle(box(p["box"]), outline=(150, 150, 150), width=1)
    for g, colour in zip(result["grounding"], palette(len(result["grounding"]))):
        b = box(g["box"])
        d.rectangle(b, outline=colour, width=3)
        x, y = b[0], max(0, b[1] - 12)
        d.rectangle([x, y, x + d.textlength(g["word"], font=font) + 4, y + 12], fill=colour)
        d.text((x + 2, y), g["word"], fill="black", font=font)
    for i, text in enumerate(lines):
        d.text((4, image.height + 5 + 14 * i), text, fill="black", font=font)
    return canvas


def list_images(path: Path, limit: int) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return files[:limit] if limit > 0 else files
    raise DataError(f"no image or folder at {path}")


def proposals_for(paths: list[Path], cap, detections: str) -> list[np.ndarray] | None:
    """Known proposals: a detection JSON, or the run's own h5 rows when every path is an image of
    its data set (NBTCaptioner.own_proposals); None leaves them to the captioner."""
    if detections:
        from misc.detector import detections_from_json
        table = detections_from_json(read_json(detections), cap.classes, detections)
        by_name = {}
        for e in read_json(detections):
            by_name[e.get("file_name", "")] = table[int(e["image_id"])]
        missing = [p.name for p in paths if p.name not in by_name]
        if missing:
            raise DataError(f"{detections}: no detections for {missing[0]}")
        return [by_name[p.name] for p in paths]
    own = [cap.own_proposals(p) for p in paths]
    return None if any(rows is None for rows in own) else own


def default_images(cap, limit: int) -> list[Path]:
    dic = read_json(cap.opt.input_dic)
    test = [im for im in dic["images"] if im["split"] == cap.opt.eval_split] or dic["images"]
    return [Path(cap.opt.image_path) / im["file_path"] for im in test[:limit]]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        cli = parse_cli(argv)
        unknown = set(cli) - DEMO_KEYS
        if unknown:
            raise ConfigError(f"demo.py does not take --{sorted(unknown)[0]} (takes: {', '.join(sorted(DEMO_KEYS))})")
        defaults = Options(start_from="save/world")
        args = {k: coerce(k, cli[k]) if k in cli else getattr(defaults, k) for k in DEMO_KEYS}
        from misc.api import NBTCaptioner
        overrides = {k: args[k] for k in ("detector_weights", "cuda") if k in cli}
        cap = NBTCaptioner.from_pretrained(args["start_from"], **overrides)
        limit = args["demo_max_images"]
        paths = list_images(Path(args["demo_path"]), limit) if args["demo_path"] else default_images(cap, limit)
        from misc.transforms import load_image
        images = [load_image(p) for p in paths]
        keep = [i for i, im in enumerate(images) if im is not None]
        if args["demo_detections"]:
            proposals = proposals_for([paths[i] for i in keep], cap, args["demo_detections"])
        else:    # the run's own detections for its data set's images; the detector for the others
            proposals = [cap.own_proposals(paths[i], images[i]) for i in keep]
        results = cap.generate([images[i] for i in keep], proposals,
                               beam_size=args["beam_size"], cbs=args["cbs"], cbs_mode=args["cbs_mode"],
                               cbs_tag_size=args["cbs_tag_size"])
        out_dir = Path(args["demo_out"])
        summary = []
        for i, res in zip(keep, results):
            stem = paths[i].stem
            with atomic_path(out_dir / f"{stem}.jpg") as tmp:
                draw(images[i], res).save(tmp, format="JPEG", quality=92)
            record = {"image": str(paths[i]), **res}
            atomic_write_json(out_dir / f"{stem}.json", record, indent=1)
            summary.append(record)
            print(f"{paths[i].name}: {res['tagged']}")
        atomic_write_json(out_dir / "visu.json", summary, indent=1)
        print(f"wrote {len(summary)} pictures and JSON files to {out_dir}/")
    except (ConfigError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
