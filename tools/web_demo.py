"""The web page: upload or drag a photo (or click a world example), get its grounded caption.

    pip install -e ".[web]"                                   # Gradio: an optional extra
    python tools/web_demo.py --start_from save/world          # then open http://127.0.0.1:7860
    python tools/web_demo.py --start_from save/coco --detector_weights frcnn.pth --host 0.0.0.0
    python tools/web_demo.py --start_from save/world save/world_zh     # English and Chinese (中文)

A Gradio app. The page shows the picture with its grounded boxes outlined (one colour per class,
the objects' own pixels untouched), the caption with its [visual words], the grounding as a table
and the result's JSON behind a fold. Given several runs, one per caption language, the page first
offers the language (中文 / English) and captions with that language's run.
The same function is an API endpoint, `/caption` (see the README for a `gradio_client` call; the
page's footer links to its API page).

One request, in order: Gradio's upload route refuses a file over `--max_upload_mb` while it
streams in; the request waits in Gradio's queue (`--queue_size` places, `--concurrency` captions
at a time); `read_upload` checks the file's size and the pixel count in its header (PIL reads
the header only) against `--max_megapixels`, and only then decodes it; `NBTCaptioner.generate`
captions it. So decoded pixels held at once are at most concurrency x max_megapixels x 3 bytes.

Proposals come from `NBTCaptioner.generate`: for the run's own images (a world run's world
images, recognised by their pixels) the run's own detections, otherwise the run's detector
(`--detector_weights`); where there is none that fits, the page shows generate's one-line reason.
"""
from __future__ import annotations

import argparse
import colorsys
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

if __package__ in (None, ""):                        # `python tools/web_demo.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

from nbt.misc.api import NBTCaptioner  # noqa: E402
from nbt.misc.config import ConfigError  # noqa: E402
from nbt.misc.io import DataError, read_json  # noqa: E402
from nbt.misc.transforms import open_image  # noqa: E402

try:
    import gradio as gr
except ImportError:                                  # the optional extra is not installed
    gr = None

CBS_MODES = ("all", "unique", "novel")
MAX_BEAM = 10
TABLE_HEADERS = ["word", "class", "x1", "y1", "x2", "y2", "score"]


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 << 20          # upload size
    max_pixels: int = 50_000_000       # width x height, read from the header before decoding


def read_upload(path: str | Path, limits: Limits) -> Image.Image:
    """The uploaded file as an RGB image, or a DataError saying what is wrong with it. The size
    and pixel count are checked before any pixel is decoded: `Image.open` reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise DataError("the file is empty (0 bytes): upload a photo (JPEG, PNG, WebP, ...)")
    if size > limits.max_bytes:
        raise DataError(f"the file is {size / 2**20:.1f} MB; this server takes at most "
                        f"{limits.max_bytes / 2**20:.0f} MB")
    try:
        with Image.open(path) as im:                 # header only: nothing decoded yet
            width, height = im.size
    except Image.DecompressionBombError:
        raise DataError(f"the image has over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; this "
                        f"server takes at most {limits.max_pixels / 1e6:.0f}") from None
    except (OSError, ValueError, SyntaxError):
        raise DataError("the file is not an image (JPEG, PNG, WebP, BMP, GIF or TIFF)") from None
    if width * height > limits.max_pixels:
        raise DataError(f"the image is {width} x {height} = {width * height / 1e6:.0f} megapixels; this "
                        f"server takes at most {limits.max_pixels / 1e6:.0f}: resize it first")
    try:
        return open_image(path)                      # decodes: upright RGB, any mode
    except ValueError as err:                        # truncated, corrupt, no finite pixel ...
        raise DataError(f"the image could not be decoded: {err}") from None


def palette(names: list[str]) -> dict[str, str]:
    """A distinct hex colour per class name (golden-ratio hues)."""
    rgb = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95) for i in range(len(names))]
    return {n: "#%02x%02x%02x" % tuple(int(255 * c) for c in col) for n, col in zip(names, rgb)}


def display_picture(image: Image.Image, grounding: list[dict], lo: int = 480, hi: int = 800, border: int = 3):
    """The picture scaled so its long side is within [lo, hi] (a 128-px world image is hard to see,
    a 12-megapixel photo too heavy to annotate), and one (mask, class) annotation per class: the
    outlines of its grounded boxes, opaque, and nothing inside them, so that the object keeps its
    own colour (a filled tint turned a "yellow [kite]" salmon) and the legend names each class once."""
    long = max(image.size)
    k = lo / long if long < lo else hi / long if long > hi else 1.0
    if k != 1.0:
        image = image.resize((round(image.width * k), round(image.height * k)),
                             Image.BICUBIC if k > 1 else Image.LANCZOS)
    boxes = []
    for g in grounding:
        x1, y1, x2, y2 = (round(v * k) for v in g["box"])
        x1, y1 = min(max(x1, 0), image.width - 1), min(max(y1, 0), image.height - 1)
        x2, y2 = min(max(x2, x1 + 1), image.width), min(max(y2, y1 + 1), image.height)
        boxes.append((g["class"], x1, y1, x2, y2))
    masks: dict[str, np.ndarray] = {}
    for c, x1, y1, x2, y2 in boxes:
        m = masks.setdefault(c, np.zeros((image.height, image.width), np.float32))    # (H, W) opacity
        m[y1:y2, x1:x1 + border] = m[y1:y2, x2 - border:x2] = 1.0
        m[y1:y1 + border, x1:x2] = m[y2 - border:y2, x1:x2] = 1.0
    return image, [(m, c) for c, m in masks.items()]


def caption_segments(tagged: str, grounding: list[dict]) -> list[tuple[str, str | None]]:
    """"a [dog] on a [mat]" -> [("a ", None), ("[dog]", "dog"), (" on a ", None), ("[mat]", "mat")]:
    each visual word labelled with the class of the region it was grounded in."""
    classes = iter(g["class"] for g in grounding)
    out: list[tuple[str, str | None]] = []
    for piece in re.split(r"(\[[^\]]*\])", tagged):
        if not piece:
            continue
        if piece.startswith("[") and piece.endswith("]"):
            out.append((piece, next(classes, None)))
        elif out and out[-1][1] is None:
            out[-1] = (out[-1][0] + piece, None)
        else:
            out.append((piece, None))
    return out


def whole(name: str, value) -> int:
    """An API number (the sliders send floats) as an int, or a DataError naming the option."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{name} {value!r} is not a number") from None
    if not number.is_integer():                                       # 2.5, nan, inf
        raise DataError(f"{name} {value!r} is not a whole number")
    return int(number)


def as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def language_name(cap) -> str:
    """The name of a run's caption language, as the page offers it (中文, English)."""
    return cap.vocab.language.name


class WebCaptioner:
    """The page's function: an upload, the decoding options and the language -> the four outputs.
    `cap`: one NBTCaptioner, or several (one per caption language: the page's language choice)."""

    def __init__(self, cap, limits: Limits = Limits()):
        caps = list(cap) if isinstance(cap, (list, tuple)) else [cap]
        self.runs: dict[str, object] = {}
        for c in caps:
            name = language_name(c)
            if name in self.runs:
                raise ConfigError(f"two runs caption in {name}: give one run per language")
            self.runs[name] = c
        self.cap, self.limits = caps[0], limits

    @property
    def languages(self) -> list[str]:
        return list(self.runs)

    def run_for(self, language: str | None):
        if not language:
            return self.cap
        if language not in self.runs:
            raise DataError(f"language {language!r} is not one of {', '.join(self.runs)}")
        return self.runs[language]

    def caption(self, path: str | Path, beam_size: int = 3, cbs: bool = False, cbs_mode: str = "all",
                cbs_tag_size: int = 3, language: str | None = None) -> tuple[dict, Image.Image]:
        """(the result as a dict, the decoded image); DataError for bad input."""
        cap = self.run_for(language)
        beam_size, cbs_tag_size = whole("beam_size", beam_size), whole("cbs_tag_size", cbs_tag_size)
        cbs = cbs is True or str(cbs).lower() in ("true", "1")           # JSON true, or "true" from a form
        if not 1 <= beam_size <= MAX_BEAM:
            raise DataError(f"beam_size {beam_size} is not within 1..{MAX_BEAM}")
        if cbs_mode not in CBS_MODES:
            raise DataError(f"cbs_mode {cbs_mode!r} is not one of {', '.join(CBS_MODES)}")
        if not 1 <= cbs_tag_size <= 3:
            raise DataError(f"cbs_tag_size {cbs_tag_size} is not within 1..3")
        image = read_upload(path, self.limits)
        result = cap.generate([image], beam_size=beam_size, cbs=cbs, cbs_mode=cbs_mode,
                              cbs_tag_size=cbs_tag_size)[0]
        return as_dict(result), image

    def page(self, image, beam_size=3, cbs=False, cbs_mode="all", cbs_tag_size=3, language=None):
        """Gradio's handler (preprocess=False: `image` is Gradio's file dict, or a path): the
        annotated picture, the caption segments, the grounding table and the JSON; gr.Error for
        bad input, shown on the page and returned by the API."""
        path = image.get("path") if isinstance(image, dict) else image
        if not path:
            raise gr.Error("no image: upload a photo or click an example")
        try:
            result, image = self.caption(path, beam_size, cbs, cbs_mode, cbs_tag_size, language)
        except DataError as err:                      # bad input or no detector for a photo
            raise gr.Error(str(err)) from None
        picture = display_picture(image, result["grounding"])
        table = [[g["word"], g["class"], *g["box"], g["score"]] for g in result["grounding"]]
        return picture, caption_segments(result["tagged"], result["grounding"]), table, result

    def page_on_change(self, image, *options):
        """The image changed (uploaded, example clicked, cleared): caption it, or clear the outputs."""
        if not image:
            return None, None, None, None
        return self.page(image, *options)


def example_images(cap, limit: int) -> list[str]:
    """Up to `limit` test-split images of the run's data set that exist on disk."""
    if limit <= 0 or not Path(cap.opt.input_dic).is_file():
        return []
    root = Path(cap.opt.image_path)
    images = read_json(cap.opt.input_dic)["images"]
    test = [im for im in images if im.get("split") == "test"] or images
    paths = [root / im["file_path"] for im in test]
    return [str(p) for p in paths if p.is_file()][:limit]


def build_app(web: WebCaptioner, *, run: str, examples: list[str], concurrency: int = 1):
    """The page: inputs on the left, outputs on the right, the JSON behind a fold. `run`: its name.
    With runs in several languages, a language choice (elem_id "language") comes first."""
    colours = {}
    for cap in web.runs.values():
        colours.update(palette(list(cap.classes.names)))
    # delete_cache: every hour, delete uploads and outputs older than a day from Gradio's cache
    with gr.Blocks(title="Neural Baby Talk", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(f"## Neural Baby Talk: grounded captions\nRun `{run}`: upload or drag a photo, "
                    "or click an example. Each `[visual word]` of the caption is grounded in a box of "
                    "the picture; its class is shown beside it, in the box's colour.")
        with gr.Row():
            with gr.Column(scale=2):
                language = gr.Radio(web.languages, value=web.languages[0], elem_id="language",
                                    label="Language / 语言 (首先选择语言)", visible=len(web.languages) > 1)
                image = gr.Image(type="filepath", image_mode=None, label="Photo", sources=["upload"],
                                 height=320)
                with gr.Row():
                    beam = gr.Slider(1, MAX_BEAM, value=3, step=1, label="Beam size")
                    tag_size = gr.Slider(1, 3, value=3, step=1, label="CBS tags")
                with gr.Row():
                    cbs = gr.Checkbox(value=False, label="Constrained beam search (CBS)")
                    mode = gr.Dropdown(list(CBS_MODES), value="all", label="CBS mode")
                button = gr.Button("Caption", variant="primary")
                if examples:
                    gr.Examples(examples, inputs=[image], label="Examples: the run's test images (click one)",
                                examples_per_page=len(examples))
            with gr.Column(scale=3):
                picture = gr.AnnotatedImage(label="Grounded boxes", color_map=colours, height=420,
                                            elem_id="picture")
                caption = gr.HighlightedText(label="Caption", color_map=colours, elem_id="caption")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Grounding", interactive=False,
                                     elem_id="grounding")
                with gr.Accordion("JSON", open=False):
                    result = gr.JSON(label="Result")
        inputs, outputs = [image, beam, cbs, mode, tag_size, language], [picture, caption, table, result]
        common = dict(inputs=inputs, outputs=outputs, preprocess=False, concurrency_id="caption",
                      concurrency_limit=concurrency)
        button.click(web.page, api_name="caption", **common)
        image.change(web.page_on_change, api_visibility="private", **common)
        language.change(web.page_on_change, api_visibility="private", **common)
    return app


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="The web page (Gradio): upload a photo, get its grounded caption.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--start_from", nargs="+", default=["save/world"],
                   help="run directories (or .pth files) to caption with, one per caption language "
                        "(e.g. save/world save/world_zh: the page offers English and 中文)")
    p.add_argument("--detector_weights", default="",
                   help="Faster R-CNN weights for photos (default: the run's own setting)")
    p.add_argument("--device", default="", help="cpu or cuda (default: the run's --cuda setting)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--max_upload_mb", type=float, default=20, help="largest upload accepted, in MB")
    p.add_argument("--max_megapixels", type=float, default=50,
                   help="largest image accepted, width x height in millions (read from the header)")
    p.add_argument("--concurrency", type=int, default=1, help="captions computed at the same time")
    p.add_argument("--queue_size", type=int, default=64, help="requests that may wait; more are refused")
    p.add_argument("--examples", type=int, default=8, help="example images (the run's test split) shown")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if gr is None:
            raise ConfigError('the web page needs Gradio: pip install -e ".[web]"')
        for name in ("max_upload_mb", "max_megapixels", "concurrency", "queue_size"):
            if not getattr(args, name) > 0:
                raise ConfigError(f"--{name} must be positive (got {getattr(args, name)})")
        overrides = {"detector_weights": args.detector_weights} if args.detector_weights else {}
        caps = [NBTCaptioner.from_pretrained(run, device=args.device or None, **overrides)
                for run in args.start_from]
        limits = Limits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
        web = WebCaptioner(caps, limits)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    examples = example_images(caps[0], args.examples)
    names = ", ".join(c.opt.id or r for c, r in zip(caps, args.start_from))
    app = build_app(web, run=names, examples=examples, concurrency=args.concurrency)
    app.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    app.launch(server_name=args.host, server_port=args.port, max_file_size=limits.max_bytes,
               share=False, ssr_mode=False, show_error=False)      # examples are copied to Gradio's cache
    return 0


if __name__ == "__main__":
    sys.exit(main())
