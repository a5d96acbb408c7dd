"""A web page: upload a photo, get its grounded caption (and the picture with its boxes).

    python tools/web_demo.py                                  # the default run save/world
    python tools/web_demo.py --start_from save/coco --detector_weights frcnn.pth --port 8080
Then open http://127.0.0.1:8000. `POST /api/caption` (multipart field `image`, optional
`beam_size`, `cbs`) answers the same result as JSON, for scripts.

Proposals: the run's torchvision Faster R-CNN (`--detector_weights`, or the weight enum when
online). The built-in world has no detector for new pictures, so on a world run an uploaded
world image is recognised by its pixels and gets the world's own (simulated) detections.
Standard library only (http.server); one caption at a time.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import sys
import threading
import warnings
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import demo  # noqa: E402
from misc.io import read_json  # noqa: E402

MAX_UPLOAD = 20 << 20            # bytes; the pixel limit is misc.transforms.MAX_PIXELS

FORM = """<!doctype html><html><head><meta charset="utf-8"><title>Neural Baby Talk</title>
<style>body{{font-family:sans-serif;max-width:760px;margin:2em auto}} .tag{{color:#a0522d}}
img{{max-width:100%;border:1px solid #ccc}} .err{{color:#b00}}</style></head><body>
<h2>Neural Baby Talk: caption a photo</h2>
<form method="post" action="/caption" enctype="multipart/form-data">
<input type="file" name="image" accept="image/*" required>
beam <input type="number" name="beam_size" value="3" min="1" max="10" style="width:3em">
<label><input type="checkbox" name="cbs" value="True"> constrained beam search</label>
<button type="submit">Caption</button></form>
<p style="color:#666">run: {run}</p>{result}</body></html>"""


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """multipart/form-data body -> {field name: bytes}."""
    msg = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not msg.is_multipart():
        raise ValueError("expected a multipart/form-data upload")
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = part.get_payload(decode=True) or b""
    return fields


def pixel_key(image: Image.Image) -> str:
    image = image.convert("RGB")
    return hashlib.sha1(f"{image.size}".encode() + image.tobytes()).hexdigest()


class CaptionService:
    """The model, a lock (one caption at a time) and, for world runs, the world images by pixels."""

    def __init__(self, run: str, overrides: dict):
        from misc.api import NBTCaptioner
        self.run = run
        self.cap = NBTCaptioner.from_pretrained(run, **overrides)
        self.lock = threading.Lock()
        self._known: dict[str, Path] | None = None

    def known_path(self, image: Image.Image) -> Path | None:
        """The world image with these pixels (its proposals are in the run's h5), or None. The
        index is built on the first upload, not at start-up (one PNG decode per world image)."""
        if self.cap.opt.dataset != "world" or not Path(self.cap.opt.proposal_h5).is_file():
            return None
        with self.lock:
            if self._known is None:
                self._known = {}
                root = Path(self.cap.opt.image_path)
                for im in read_json(self.cap.opt.input_dic)["images"]:
                    path = root / im["file_path"]
                    if path.is_file():
                        with Image.open(path) as f:
                            self._known[pixel_key(f)] = path
        return self._known.get(pixel_key(image))

    def caption(self, data: bytes, beam_size: int, cbs: bool) -> tuple[dict, Image.Image]:
        from misc.transforms import load_image
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = load_image(io.BytesIO(data))                             # any mode -> RGB
        if image is None:
            raise ValueError("not a readable image (JPEG, PNG, ...), or over the size limit")
        proposals = None
        path = self.known_path(image)
        if path is not None:
            proposals = demo.proposals_for([path], self.cap, "")
        elif self.cap.opt.dataset == "world" and not self.cap.opt.detector_weights:
            raise ValueError("this built-in-world run has no detector for new pictures: upload an image "
                             "of its world, or start the server with --detector_weights")
        with self.lock:
            result = self.cap.generate([image], proposals, beam_size=beam_size, cbs=cbs,
                                       cbs_mode=self.cap.opt.cbs_mode, cbs_tag_size=self.cap.opt.cbs_tag_size)[0]
        return result, demo.draw(image, result)


def result_html(result: dict, picture: Image.Image) -> str:
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=90)
    tagged = html.escape(result["tagged"])
    for g in result["grounding"]:
        w = html.escape(g["word"])
        tagged = tagged.replace(f"[{w}]", f'<b class="tag">[{w}]</b>', 1)
    return (f"<h3>{tagged}</h3><img alt=\"captioned picture\" src=\"data:image/jpeg;base64,"
            f"{base64.b64encode(buf.getvalue()).decode()}\"><pre>{html.escape(json.dumps(result, indent=1))}</pre>")


def make_handler(service: CaptionService):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: str, kind: str = "text/html; charset=utf-8"):
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):                                   # one line per request
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

        def do_GET(self):
            if self.path.split("?")[0] != "/":
                return self._send(404, "not found", "text/plain")
            self._send(200, FORM.format(run=html.escape(service.run), result=""))

        def do_POST(self):
            api = self.path == "/api/caption"
            if self.path not in ("/caption", "/api/caption"):
                return self._send(404, "not found", "text/plain")
            try:
                size = int(self.headers.get("Content-Length", 0))
                if size > MAX_UPLOAD:
                    raise ValueError(f"upload of {size} bytes is over the {MAX_UPLOAD >> 20} MB limit")
                fields = parse_multipart(self.headers.get("Content-Type", ""), self.rfile.read(size))
                if not fields.get("image"):
                    raise ValueError("no image in the upload (field 'image')")
                beam = int(fields.get("beam_size", b"1") or 1)
                if not 1 <= beam <= 10:
                    raise ValueError(f"beam_size {beam} is not within 1..10")
                cbs = fields.get("cbs", b"False").decode().strip().lower() == "true"
                result, picture = service.caption(fields["image"], beam, cbs)
            except ValueError as err:
                if api:
                    return self._send(400, json.dumps({"error": str(err)}), "application/json")
                msg = f'<p class="err">{html.escape(str(err))}</p>'
                return self._send(400, FORM.format(run=html.escape(service.run), result=msg))
            if api:
                return self._send(200, json.dumps(result), "application/json")
            self._send(200, FORM.format(run=html.escape(service.run), result=result_html(result, picture)))
    return Handler


def serve(service: CaptionService, host: str, port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(service))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--start_from", default="save/world")
    p.add_argument("--detector_weights", default="")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    overrides = {"detector_weights": args.detector_weights} if args.detector_weights else {}
    try:
        service = CaptionService(args.start_from, overrides)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    server = serve(service, args.host, args.port)
    print(f"serving {args.start_from} on http://{args.host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
