"""The running web page: `python tools/web_demo.py` in a subprocess on a free port, driven through
Gradio's API (gradio_client, raw HTTP) and in headless Chromium (Debian's chromium + chromium-driver,
installed by `make browser`). The server's memory is read from /proc/<pid>/status. The README's
screenshot is not taken here: `make screenshot` (tools/web_screenshot.py) takes it from a trained run."""
import contextlib
import shutil
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from conftest import ROOT, require_chromium, require_module

require_module("gradio")
require_module("selenium")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from nbt.misc.api import NBTCaptioner  # noqa: E402
from test_web_demo import bomb_png  # noqa: E402
from nbt.tools import web_screenshot  # noqa: E402
from nbt.tools.web_demo import example_images  # noqa: E402
from nbt.tools.web_screenshot import OFFLINE, caption_text, open_page, upload_and_wait  # noqa: E402

MAX_UPLOAD_MB = 2


@dataclass
class Server:
    url: str
    pid: int
    log: Path

    def alive(self) -> bool:
        with urllib.request.urlopen(self.url, timeout=30) as r:
            return r.status == 200


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRSS:
    """The largest RSS of a process while the block runs (sampled every 5 ms)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.005)

    def __enter__(self):
        self.before = self.peak = rss_mb(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.after = rss_mb(self.pid)
        self.peak = max(self.peak, self.after)


@contextlib.contextmanager
def serve(runs: list[str], tmp: Path):
    """`tools/web_demo.py --start_from RUN ...` on a free port, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **OFFLINE, "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}          # the same arithmetic as this process
    log = tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "web_demo.py"), "--start_from", *runs,
                                 "--port", str(port), "--max_upload_mb", str(MAX_UPLOAD_MB)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = Server(f"http://127.0.0.1:{port}/", proc.pid, log)
    deadline = time.time() + 180
    try:
        while True:
            assert proc.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
            try:
                if srv.alive():
                    break
            except OSError:
                assert time.time() < deadline, f"the server did not start: {log.read_text()[-3000:]}"
                time.sleep(0.5)
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(world_run, tmp_path_factory):
    with serve([world_run], tmp_path_factory.mktemp("web")) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, download_files=False, analytics_enabled=False)


@pytest.fixture(scope="module")
def expected(world_run):
    """In-process captions of five world test images (beam 2), to check the server's answers."""
    cap = NBTCaptioner.from_pretrained(world_run)
    return {p: cap.generate([p], beam_size=2)[0] for p in example_images(cap, 5)}


def caption(client, path, **kw):
    return client.predict(handle_file(str(path)), 2, False, "all", 3, api_name="/caption", **kw)


def test_twenty_concurrent_api_requests_are_answered_correctly_in_bounded_memory(server, client, expected):
    paths = list(expected)
    for p in paths[:2]:                                    # warm up: model, pixel index, Gradio caches
        caption(client, p)
    with PeakRSS(server.pid) as one:
        caption(client, paths[2])
    with PeakRSS(server.pid) as burst:
        jobs = [client.submit(handle_file(str(p)), 2, False, "all", 3, api_name="/caption") for p in paths * 4]
        answers = [job.result(timeout=300) for job in jobs]
    for p, (picture, segments, table, result) in zip(paths * 4, answers):
        assert result["tagged"] == expected[p]["tagged"] and result["grounding"] == expected[p]["grounding"], p
        assert len(table["data"]) == len(result["grounding"]) and picture["image"]
    print(f"\nserver RSS: one request {one.before:.0f} -> peak {one.peak:.0f} MB; 20 concurrent "
          f"requests {burst.before:.0f} -> peak {burst.peak:.0f} -> {burst.after:.0f} MB")
    # one caption at a time (--concurrency 1): 20 waiting requests cost little more than one
    assert burst.peak - burst.before <= 2 * max(one.peak - one.before, 10) + 40
    assert server.alive() and caption(client, paths[0])[3]["tagged"] == expected[paths[0]]["tagged"]


def test_bombs_and_oversize_uploads_are_refused_without_decoding(server, client, tmp_path):
    bomb_png(tmp_path / "bomb_400mpx.png", 20000, 20000, bits=1, colour=0)     # 400 megapixels, < 100 KB
    bomb_png(tmp_path / "bomb_64mpx.png", 7999, 7999)                          # 192 MB decoded, < 400 KB
    for name, message in [("bomb_400mpx.png", "over 179 megapixels"), ("bomb_64mpx.png", "64 megapixels")]:
        with PeakRSS(server.pid) as mem:
            with pytest.raises(AppError) as err:
                caption(client, tmp_path / name)
        assert message in str(err.value), (name, err.value)
        print(f"\n{name} ({(tmp_path / name).stat().st_size / 1e3:.0f} KB): server RSS {mem.before:.0f} -> "
              f"peak {mem.peak:.0f} MB")
        assert mem.peak - mem.before < 50, f"{name}: server RSS {mem.before:.0f} -> {mem.peak:.0f} MB"
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom((MAX_UPLOAD_MB + 1) << 20))
    with pytest.raises(ValueError, match="exceeds the maximum file size"):      # gradio_client checks first,
        caption(client, big)
    with PeakRSS(server.pid) as mem:                                           # the server checks too
        r = httpx.post(server.url + "gradio_api/upload", files={"files": big.open("rb")}, timeout=60)
    assert r.status_code == 413 and "maximum allowed size" in r.text, (r.status_code, r.text)
    assert mem.peak - mem.before < 50 and server.alive()


def test_an_upload_without_a_valid_length_is_refused(server):
    """The old page read the whole body when sent `Content-Length: -1` (60 MB read, answered 200)."""
    host, port = server.url.split("//")[1].strip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n" + b"x" * (1 << 20))
        status = s.recv(100).split(b"\r\n")[0]
    assert status.split()[1] in (b"400", b"413"), status
    assert server.alive()


def chromium():
    return web_screenshot.chromium(*require_chromium())


def test_in_chromium_an_upload_and_an_example_are_captioned_and_a_text_file_gets_a_message(server, world_run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    cap = NBTCaptioner.from_pretrained(world_run)
    image, example = example_images(cap, 2)
    tagged, example_tagged = [r["tagged"] for r in cap.generate([image, example], beam_size=3)]   # page defaults
    assert tagged != example_tagged
    browser = chromium()
    try:
        # as a drop or a click on the upload area does; a path relative to the working folder, as
        # `make screenshot` gives its default image (the browser itself needs an absolute one)
        upload_and_wait(browser, server.url, os.path.relpath(image), expect=tagged)
        img = browser.find_element(By.CSS_SELECTOR, "#picture img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 480
        assert browser.find_elements(By.CSS_SELECTOR, "#caption .highlighted")         # visual words coloured
        assert browser.save_screenshot(str(tmp_path / "page.png"))
        assert web_screenshot.looks_like_a_page(tmp_path / "page.png")      # (make screenshot takes the README's)

        browser.find_element(By.XPATH, f"//button[contains(@class, 'gallery-item')][.//img[contains(@src, "
                                       f"'{Path(example).name}')]]").click()           # an example
        WebDriverWait(browser, 120).until(lambda b: caption_text(b) == example_tagged)

        (tmp_path / "notes.png").write_text("not a picture\n")
        open_page(browser, server.url).send_keys(str(tmp_path / "notes.png"))
        def toasts(b):
            return " ".join(e.get_attribute("textContent") for e in b.find_elements(By.CSS_SELECTOR, "[data-testid=toast-text]"))
        WebDriverWait(browser, 60).until(lambda b: toasts(b).strip())
        WebDriverWait(browser, 10).until(lambda b: "the file is not an image" in toasts(b), toasts(browser))
    finally:
        browser.quit()


def test_in_chromium_the_language_choice_gives_a_chinese_caption_with_its_grounded_boxes(
        world_run, world_zh_run, tmp_path):
    """The page of an English and a Chinese run: 中文 / English first; choosing 中文 captions the
    same picture with the Chinese run, its visual words highlighted and their boxes drawn (with
    constrained beam search, so that the one-iteration runs name detected objects)."""
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    en, zh = NBTCaptioner.from_pretrained(world_run), NBTCaptioner.from_pretrained(world_zh_run)
    image = example_images(en, 1)[0]
    expect = {"English": en.generate([image], beam_size=3, cbs=True)[0],
              "中文": zh.generate([image], beam_size=3, cbs=True)[0]}
    assert any("\u4e00" <= ch <= "\u9fff" for ch in expect["中文"]["caption"]) and expect["中文"]["grounding"]
    with serve([world_run, world_zh_run], tmp_path) as srv:
        browser = chromium()
        try:
            browser.get(srv.url)
            upload = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "input[type=file]"))
            choices = [e.get_attribute("value") for e in browser.find_elements(By.CSS_SELECTOR, "#language input")]
            assert choices == ["English", "中文"]

            def caption_text(b):
                return "".join(e.get_attribute("textContent") for e in b.find_elements(By.CSS_SELECTOR, "#caption .text"))
            browser.find_element(By.XPATH, "//label[contains(., 'Constrained beam search')]//input").click()
            upload.send_keys(image)
            wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))  # re-rendered
            wait.until(lambda b: caption_text(b) == expect["English"]["tagged"])
            browser.find_element(By.CSS_SELECTOR, "#language input[value='中文']").click()
            wait.until(lambda b: caption_text(b) == expect["中文"]["tagged"])
            words = [e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "#caption .highlighted")]
            # each visual word highlighted, labelled with the (Chinese) class of its region
            assert [w.split() for w in words] == [[f"[{g['word']}]", g["class"]] for g in expect["中文"]["grounding"]]
            # the picture's legend names the Chinese classes of the grounded boxes
            legend = " ".join(e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "#picture button"))
            for g in expect["中文"]["grounding"]:
                assert g["class"] in legend, (g["class"], legend)
            browser.save_screenshot(str(tmp_path / "zh_page.png"))
            if os.environ.get("NBT_KEEP_SCREENSHOT"):                    # to look at it
                shutil.copyfile(tmp_path / "zh_page.png", os.environ["NBT_KEEP_SCREENSHOT"])
        finally:
            browser.quit()
