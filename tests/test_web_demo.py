"""The upload page: a real HTTP round trip on a free port with a randomly initialised world run."""
import io
import json
import threading
import urllib.error
import urllib.request
import uuid

import pytest

from tools import web_demo


@pytest.fixture(scope="module")
def server(world_run):
    service = web_demo.CaptionService(world_run, {})
    httpd = web_demo.serve(service, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def post(url: str, fields: dict) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f"--{boundary}\r\n".encode())
        if isinstance(value, bytes):
            body.write(f'Content-Disposition: form-data; name="{name}"; filename="up.png"\r\n'
                       "Content-Type: application/octet-stream\r\n\r\n".encode() + value + b"\r\n")
        else:
            body.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body.write(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(url, data=body.getvalue(), method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_page_upload_and_api(server, world_dir):
    with urllib.request.urlopen(server + "/", timeout=30) as r:
        page = r.read().decode()
    assert r.status == 200 and 'type="file"' in page
    png = sorted((world_dir / "images" / "world").glob("*.png"))[0].read_bytes()
    code, body = post(server + "/caption", {"image": png, "beam_size": "2", "cbs": "True"})
    assert code == 200 and b"data:image/jpeg;base64," in body
    code, body = post(server + "/api/caption", {"image": png, "beam_size": "1"})
    result = json.loads(body)
    assert code == 200 and {"caption", "tagged", "grounding", "proposals"} <= set(result)
    assert result["proposals"]                                   # recognised: the world's detections


def test_bad_uploads_get_a_message(server):
    code, body = post(server + "/api/caption", {"image": b"not an image"})
    assert code == 400 and "readable image" in json.loads(body)["error"]
    code, body = post(server + "/api/caption", {"beam_size": "2"})
    assert code == 400 and "no image" in json.loads(body)["error"]
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buf, format="PNG")   # not a world image, no detector
    code, body = post(server + "/caption", {"image": buf.getvalue()})
    assert code == 400 and b"no detector" in body
