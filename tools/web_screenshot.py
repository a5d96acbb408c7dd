"""The README's picture of the web page, taken on purpose from a trained run.

Starts `tools/web_demo.py --start_from RUN` on a free local port, opens the page in headless
Chromium (Selenium; Debian's chromium + chromium-driver, `make browser`), uploads one of the run's
test images, waits until its caption is on the page, and saves the window as a PNG:

    python tools/web_screenshot.py --start_from save/world --out docs/web_demo.png     # = make screenshot

Needs the test extras (`pip install -e ".[test]"`: Gradio, Selenium). The page is driven from the
outside, as a visitor would, so the picture shows whatever tools/web_demo.py draws today.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import _checkout  # noqa: F401  (`nbt` = this checkout)

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "SE_AVOID_STATS": "true", "SE_OFFLINE": "true"}
WINDOW = (1280, 1100)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def web_server(run: str, *, log: Path, extra: tuple[str, ...] = (), timeout: float = 180.0):
    """`tools/web_demo.py --start_from run` on a free port -> (url, process) while the block runs."""
    port = free_port()
    env = {**os.environ, **OFFLINE, "GRADIO_TEMP_DIR": str(log.parent / "gradio")}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "web_demo.py"), "--start_from", str(run),
                                 "--port", str(port), *extra], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the web page exited: {log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the web page did not start in {timeout:.0f} s: {log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def chromium(browser: str, driver: str):
    """Headless Chromium through Selenium, with a window the size of the README's picture."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def find_chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def caption_text(browser) -> str:
    """The tagged caption as the page shows it."""
    from selenium.webdriver.common.by import By
    return "".join(e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "#caption .text"))


def open_page(browser, url: str):
    """Load the page -> its file input."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(url)
    return WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "input[type=file]"))


def upload_and_wait(browser, url: str, image: str, *, expect: str | None = None, timeout: float = 120) -> str:
    """Upload `image` as a drop on the upload area does, wait for its caption (== expect when
    given) and for the progress indicators to go -> the caption shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    open_page(browser, url).send_keys(str(Path(image).resolve()))     # the browser needs an absolute path
    WebDriverWait(browser, timeout).until(lambda b: caption_text(b) == expect if expect else caption_text(b).strip())
    WebDriverWait(browser, 30).until(lambda b: all(
        "hide" in e.get_attribute("class") for e in b.find_elements(By.CSS_SELECTOR, "[data-testid=status-tracker]")))
    time.sleep(1.0)                                                        # let the fades finish
    return caption_text(browser)


def looks_like_a_page(path: Path) -> bool:
    """Not blank: as wide as the window and more than a hundred colours."""
    from PIL import Image
    shot = Image.open(path).convert("RGB")
    return shot.width >= 1000 and len(shot.getcolors(1 << 20) or range(1 << 20)) > 100


def default_image(run: str) -> str:
    """The first of the page's example images (the run's first test image on disk)."""
    from nbt.misc.api import NBTCaptioner
    from nbt.tools.web_demo import example_images
    images = example_images(NBTCaptioner.from_pretrained(run), 1)
    if not images:
        raise RuntimeError(f"{run}: its data set has no test image on disk; pass --image PATH")
    return images[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start_from", default="save/world", help="trained run directory the page captions with")
    p.add_argument("--image", default="", help="image to upload (default: the run's first test image)")
    p.add_argument("--out", default="docs/web_demo.png", help="PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    found = find_chromium()
    if found is None:
        print("error: Chromium and chromedriver are needed (make browser)", file=sys.stderr)
        return 2
    if not Path(args.start_from).exists():
        print(f"error: {args.start_from}: no such run (train one first: python main.py)", file=sys.stderr)
        return 2
    image = args.image or default_image(args.start_from)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="nbt-screenshot-") as tmp:
        shot = Path(tmp) / "page.png"
        with web_server(args.start_from, log=Path(tmp) / "server.log") as (url, _):
            browser = chromium(*found)
            try:
                shown = upload_and_wait(browser, url, image)
                if not browser.save_screenshot(str(shot)) or not looks_like_a_page(shot):
                    print("error: the screenshot came out blank", file=sys.stderr)
                    return 1
            finally:
                browser.quit()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(f".{out.name}.tmp")
        shutil.copyfile(shot, tmp_out)
        os.replace(tmp_out, out)
    print(f"wrote {out}: {Path(image).name} captioned '{shown}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
