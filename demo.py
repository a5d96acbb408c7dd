"""Caption images with their grounded boxes drawn.

    python demo.py                                   # world test images, the default run save/world
    python demo.py --cbs True                        # constrained beam search
    python demo.py --start_from save/coco --demo_path photos/ --detector_weights frcnn.pth
    python demo.py --start_from save/coco --demo_path img.jpg --demo_detections dets.json

Proposals of each image: its rows in --demo_detections (coco-mini's JSON format) when given; else,
for an image of the run's own data set (the same file, or a copy: the same pixels), the rows of the
run's detection h5 (the built-in world's simulated detector); else torchvision's Faster R-CNN
(--detector_weights, or torchvision's download when online). A world run has no detector for
other pictures: they are skipped with the reason, the others are still captioned.

Writes <demo_out>/<name>.jpg (the grounded boxes in colour, labelled with their words; the
proposals scoring at least --demo_min_score, at most --demo_max_boxes, in grey; the caption
underneath with its [visual words] in their boxes' colours; Chinese text in a CJK font found on
the machine, `cjk_font`), <demo_out>/<name>.json (the
CaptionResult, boxes in the image's pixels) and <demo_out>/visu.json (all of them).
The original demo.py's options keep their meaning: --id names the run save/<id> (without
--start_from), --load_best_score False takes model.pth, --image_path is where the run's images are,
--det_oracle uses their GT boxes as proposals; --cnn_backend and --data_path are accepted with a
note (the checkpoint defines both here).
Exit status: 0 when at least one image was captioned (skipped ones are listed), 2 when none
could be (or on a bad option or file).
"""
from __future__ import annotations

import colorsys
import re
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if __package__ in (None, ""):   # `python demo.py` from a checkout: `nbt` is this checkout
    import _checkout  # noqa: F401

from nbt.misc.config import ConfigError, Options, coerce, format_help, parse_cli
from nbt.misc.io import DataError, atomic_path, atomic_write_json, read_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEMO_KEYS = ("start_from", "demo_path", "demo_out", "demo_max_images", "demo_detections", "detector_weights",
             "beam_size", "cbs", "cbs_mode", "cbs_tag_size", "demo_min_score", "demo_max_boxes", "cuda",
             # the original demo.py's options besides those above
             "id", "load_best_score", "image_path", "det_oracle", "cnn_backend", "data_path")
DEMO_DEFAULTS = {"start_from": "save/world"}


def demo_help() -> str:
    shown = {**DEMO_DEFAULTS, **{k: "the run's" for k in ("image_path", "cnn_backend", "data_path")}}
    return format_help("demo.py", __doc__.strip(), shown, keys=DEMO_KEYS)


def parse_args(argv: list[str]) -> tuple[dict, set[str]]:
    """demo.py's options (defaults, then the command line; prefixes allowed) and the names given."""
    cli = parse_cli(argv, keys=DEMO_KEYS)
    defaults = Options(**DEMO_DEFAULTS)
    return {k: coerce(k, cli[k]) if k in cli else getattr(defaults, k) for k in DEMO_KEYS}, set(cli)


# -- the picture ----------------------------------------------------------------------------------
def palette(n: int) -> list[tuple[int, int, int]]:
    """n distinct colours (golden-ratio hues): no fixed limit (the original's 6 crashed at 7)."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)) for i in range(n)]


def ink_on(colour: tuple[int, int, int]) -> str:
    """Black text on light colours, white on dark ones (ITU-R 601 luma)."""
    r, g, b = colour
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


# CJK fonts of Debian's fonts-wqy-zenhei / fonts-noto-cjk (installed by `make`), macOS, Windows
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc", "/System/Library/Fonts/PingFang.ttc",
             "C:/Windows/Fonts/msyh.ttc", "C:/Windows/Fonts/simhei.ttf")
_CJK = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_noticed_no_cjk_font: list[bool] = []


def has_cjk(text: str) -> bool:
    return bool(_CJK_CHAR.search(text))


def cjk_font() -> str | None:
    """The first CJK font file on the machine: a known path, else fontconfig's answer for zh."""
    for path in CJK_FONTS:
        if Path(path).is_file():
            return path
    import shutil
    import subprocess
    if shutil.which("fc-match"):
        out = subprocess.run(["fc-match", "-f", "%{file}", ":lang=zh"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() and Path(out.stdout.strip()).is_file() \
                and Path(out.stdout.strip()).suffix.lower() in (".ttc", ".ttf", ".otf"):
            return out.stdout.strip()
    return None


def font_of(size: int, cjk: bool = False) -> ImageFont.ImageFont:
    """Pillow's default font, or for Chinese text a CJK font (its default has no CJK glyphs);
    without one, the default font and a one-line notice (once)."""
    path = cjk_font() if cjk else None
    if path:
        return ImageFont.truetype(path, size)
    if cjk and not _noticed_no_cjk_font:
        _noticed_no_cjk_font.append(True)
        print("note: no CJK font found (install fonts-wqy-zenhei or fonts-noto-cjk): Chinese text is drawn "
              "with Pillow's default font, without its glyphs", file=sys.stderr)
    try:
        return ImageFont.load_default(size=size)         # a scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def font_size(width: int, height: int) -> int:
    """Label text height for a picture: 1/40 of its longer side, 12 to 120 pixels."""
    return int(min(120, max(12, round(max(width, height) / 40))))


def boxes_to_draw(result, min_score: float, max_boxes: int) -> list[dict]:
    """The proposals the picture shows besides the grounded ones: score >= min_score, at most
    max_boxes, highest scores first."""
    grounded = {g["region"] for g in result["grounding"]}
    shown = [p for i, p in enumerate(result["proposals"]) if i not in grounded and p["score"] >= min_score]
    return sorted(shown, key=lambda p: -p["score"])[:max(0, max_boxes)]


def caption_tokens(tagged: str) -> list[str]:
    """'a [potted plant] on a [table]' -> ['a', '[potted plant]', 'on', 'a', '[table]']; Chinese,
    written without spaces, may break between any two characters: '两个[圆环]' -> ['两', '个', '[圆环]']."""
    return re.findall(rf"\[[^\]]*\]|[{_CJK}]|[^\s\[{_CJK}]+", tagged)


def spaced(prev: str, tok: str) -> bool:
    """Whether a space separates two caption tokens: not between Chinese characters."""
    return not (has_cjk(prev[-1:] if prev[-1:] != "]" else prev[-2:-1]) or has_cjk(tok.lstrip("[")[:1]))


def wrap(tokens: list[str], width: float, measure, space: float) -> list[list[str]]:
    """Greedy line breaking: as many tokens per line as fit in `width` (a longer token gets its own
    line); every token is kept, in order."""
    lines, line, used = [], [], 0.0
    for tok in tokens:
        w = measure(tok)
        gap = space if line and spaced(line[-1], tok) else 0.0
        if line and used + gap + w > width:
            lines.append(line)
            line, used, gap = [], 0.0, 0.0
        used += gap + w
        line.append(tok)
    return lines + [line] if line else lines


def draw(image: Image.Image, result, *, min_score: float = 0.5, max_boxes: int = 10,
         min_width: int = 480) -> Image.Image:
    """The image (upscaled when small) with the grounded boxes in colour, labelled with their
    words, the top proposals (boxes_to_draw) in grey, and the tagged caption wrapped underneath
    with each visual word on its box's colour. Text size follows the picture size."""
    k = max(1.0, min_width / image.width)
    if k > 1:
        image = image.resize((round(image.width * k), round(image.height * k)), Image.BICUBIC)
    W, H = image.size
    size = font_size(W, H)
    labels = result["tagged"] + "".join(g["word"] for g in result["grounding"])
    font, pad, space = font_of(size, cjk=has_cjk(labels)), max(2, size // 5), max(size * 0.35, 4.0)
    regions = sorted({g["region"] for g in result["grounding"]})
    colour = dict(zip(regions, palette(len(regions))))
    measure = ImageDraw.Draw(image).textlength
    lines = wrap(caption_tokens(result["tagged"]), W - 2 * pad, lambda t: measure(t, font=font), space)
    line_h = round(size * 1.3)
    canvas = Image.new("RGB", (W, H + line_h * len(lines) + 2 * pad), "white")
    canvas.paste(image, (0, 0))
    d = ImageDraw.Draw(canvas)
    for p in boxes_to_draw(result, min_score, max_boxes):
        d.rectangle([v * k for v in p["box"]], outline=(150, 150, 150), width=max(1, size // 10))
    words: dict[int, list[str]] = {}
    for g in result["grounding"]:
        words.setdefault(g["region"], []).append(g["word"])
    for g in result["grounding"]:
        if g["word"] != words[g["region"]][0]:
            continue                                               # one label per region
        x1, y1, x2, y2 = [v * k for v in g["box"]]
        d.rectangle([x1, y1, x2, y2], outline=colour[g["region"]], width=max(2, size // 5))
        label = " / ".join(dict.fromkeys(words[g["region"]]))
        lw, lh = measure(label, font=font) + 2 * pad, size + pad
        ly = y1 - lh if y1 - lh >= 0 else y1                       # above the box, else inside it
        lx = min(x1, max(0, W - lw))
        d.rectangle([lx, ly, lx + lw, ly + lh], fill=colour[g["region"]])
        d.text((lx + pad, ly + pad / 2), label, fill=ink_on(colour[g["region"]]), font=font)
    tags = iter(result["grounding"])
    for i, line in enumerate(lines):
        x, y = pad, H + pad + i * line_h
        for j, tok in enumerate(line):
            x += space if j and spaced(line[j - 1], tok) else 0.0
            w, ink = measure(tok, font=font), "black"
            g = next(tags, None) if tok.startswith("[") else None
            if g is not None:
                d.rectangle([x - 1, y, x + w + 1, y + size * 1.15], fill=colour[g["region"]])
                ink = ink_on(colour[g["region"]])
            d.text((x, y), tok, fill=ink, font=font)
            x += w
    return canvas


# -- images and their proposals -------------------------------------------------------------------
def list_images(path: Path, limit: int) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"no images in {path} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return files[:limit] if limit > 0 else files
    raise DataError(f"no image or folder at {path}")


def default_images(cap, limit: int) -> list[Path]:
    dic = read_json(cap.opt.input_dic)
    test = [im for im in dic["images"] if im["split"] == cap.opt.eval_split] or dic["images"]
    return [Path(cap.opt.image_path) / im["file_path"] for im in (test[:limit] if limit > 0 else test)]


def check_out_dir(out: Path, inputs: list[Path]) -> None:
    """The pictures must never land on the inputs: refuse an output folder that is an input folder
    (--demo_path itself, or the folder of an input image) or inside a --demo_path folder."""
    out = out.resolve()
    for p in inputs:
        folder = p.resolve() if p.is_dir() else p.resolve().parent
        if out == folder:
            raise DataError(f"--demo_out {out} is the folder of the input images: the pictures would "
                            "overwrite them; choose another folder")
        if p.is_dir() and folder in out.parents:
            raise DataError(f"--demo_out {out} is inside the input folder {folder}: its pictures would be "
                            "read as inputs next time; choose another folder")


def detections_by_name(path: str, cap) -> dict[str, np.ndarray]:
    """--demo_detections: file name -> (K, 6) rows (classes the run does not know: see
    misc.detector.detections_from_json)."""
    from nbt.misc.detector import detections_from_json
    entries = read_json(path)
    table = detections_from_json(entries, cap.classes, path)
    if any(not isinstance(e, dict) or "file_name" not in e for e in entries):
        raise DataError(f"{path}: an entry has no file_name, which matches detections to images here "
                        "(coco-mini's format; the original's names image ids only: import it with "
                        "prepro/prepro_det.py --from_json)")
    return {e["file_name"]: table[int(e["image_id"])] for e in entries}


def prepare(paths: list[Path], cap, detections: str, oracle: bool = False) -> tuple[list, list]:
    """Each image read and its proposals found -> kept [(path, image, rows or None: the
    captioner finds them)] and skipped [(path, reason)]. `oracle`: the GT boxes of the run's
    own images are the proposals (the paper's oracle rows)."""
    from nbt.misc.proposals import validate_proposals
    from nbt.misc.transforms import open_image
    table = detections_by_name(detections, cap) if detections else None
    kept, skipped = [], []
    for path in paths:
        try:
            image = open_image(path)
        except ValueError as err:
            skipped.append((path, str(err)))
            continue
        rows = None
        if oracle:
            rows = cap.ground_truth(path)
            if rows is None or not len(rows):
                skipped.append((path, "--det_oracle: no ground-truth boxes for it (not an image of the run's "
                                      "data set, or none annotated)"))
                continue
        elif table is not None:
            if path.name not in table:
                skipped.append((path, f"no detections for it in {detections}"))
                continue
            rows, problems = validate_proposals(table[path.name], image.width, image.height, cap.classes.num_classes)
            if problems:
                warnings.warn(f"{path.name}: dropped {len(problems)} unusable detections (first: {problems[0]})")
            if not len(rows):       # a caption made from no region says nothing about the image
                skipped.append((path, f"none of its detections in {detections} is usable by this run "
                                      "(a class it knows, a valid box in the image)"))
                continue
        elif cap.own_proposals(path, image) is None:
            try:
                cap.detector()
            except DataError as err:
                skipped.append((path, f"not an image of this run's data set, and no detector for it: {err}"))
                continue
        kept.append((path, image, rows))
    return kept, skipped


def report_skips(skipped: list) -> None:
    """One line per reason, naming its images."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(path.name)
    for reason, names in by_reason.items():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        print(f"skipped {shown}: {reason}", file=sys.stderr)


def output_names(paths: list[Path]) -> list[str]:
    """Output file stems: the image's stem, or stem_suffix where two inputs share a stem."""
    stems = [p.stem for p in paths]
    return [p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in paths]


def checkpoint_of(args: dict, given: set[str]) -> Path:
    """The checkpoint to caption with: --start_from (or, as the original's demo did with its run
    id, save/<--id>), its model-best.pth or, with --load_best_score False, its model.pth."""
    run = Path(args["start_from"] if "start_from" in given or not args["id"] else Path("save") / args["id"])
    if "id" in given and "start_from" in given:
        note("--id has no effect with --start_from: a run folder's checkpoints carry no id in their names")
    if run.is_dir():
        names = ("model-best.pth", "model.pth") if args["load_best_score"] else ("model.pth", "model-best.pth")
        return next((run / n for n in names if (run / n).is_file()), run)
    return run


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def run(args: dict, given: set[str]) -> int:
    from nbt.misc.api import NBTCaptioner
    out_dir = Path(args["demo_out"])
    if args["demo_path"]:
        check_out_dir(out_dir, [Path(args["demo_path"])])
    overrides = {k: args[k] for k in ("detector_weights", "cuda", "image_path") if k in given}
    cap = NBTCaptioner.from_pretrained(checkpoint_of(args, given), **overrides)
    if "cnn_backend" in given and args["cnn_backend"] != cap.opt.cnn_backend:
        note(f"--cnn_backend {args['cnn_backend']} has no effect: the checkpoint defines the CNN "
             f"({cap.opt.cnn_backend})")
    if "data_path" in given:
        note("--data_path has no effect in the demo: the run's data files are those its checkpoint names "
             "(--image_path: where its images are)")
    limit = args["demo_max_images"]
    paths = list_images(Path(args["demo_path"]), limit) if args["demo_path"] else default_images(cap, limit)
    check_out_dir(out_dir, paths)
    kept, skipped = prepare(paths, cap, args["demo_detections"], oracle=args["det_oracle"])
    if not kept and len(skipped) == 1:
        raise DataError(f"{skipped[0][0]}: {skipped[0][1]}")
    report_skips(skipped)
    if not kept:
        raise DataError(f"none of the {len(skipped)} images could be captioned (reasons above)")
    results = cap.generate([p for p, _, _ in kept], [rows for _, _, rows in kept], beam_size=args["beam_size"],
                           cbs=args["cbs"], cbs_mode=args["cbs_mode"], cbs_tag_size=args["cbs_tag_size"])
    summary = []
    for (path, image, _), name, res in zip(kept, output_names([p for p, _, _ in kept]), results):
        picture = draw(image, res, min_score=args["demo_min_score"], max_boxes=args["demo_max_boxes"])
        with atomic_path(out_dir / f"{name}.jpg") as tmp:
            picture.save(tmp, format="JPEG", quality=92)
        record = {"image": str(path), **res.to_dict()}
        atomic_write_json(out_dir / f"{name}.json", record, indent=1)
        summary.append(record)
        print(f"{path.name}: {res.tagged}")
    atomic_write_json(out_dir / "visu.json", summary, indent=1)
    extra = f"; skipped {len(skipped)} of {len(paths)} images (reasons above)" if skipped else ""
    print(f"wrote {len(summary)} pictures and JSON files to {out_dir}/{extra}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        print(demo_help())
        return 0
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *a, **k: print(f"warning: {message}", file=sys.stderr)
        try:
            return run(*parse_args(argv))
        except (ConfigError, DataError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
