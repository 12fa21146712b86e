"""Draw docs/app_screenshot.png: the browser app serving a model, after one Generate, as a person sees it.

    python docs/make_app_screenshot.py demo/ldm.ckpt docs/app_screenshot.png

Starts ``python -m cxr_ldm.app`` on a free port of 127.0.0.1, drives the page in headless Chromium (Playwright),
types a report, asks for 4 images at seed 0 and saves the full page once they are shown.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

PROMPT = "Large right pleural effusion."
WAIT_MS = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app ended with status {process.returncode} before serving")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"the app did not answer at {url} within {seconds:.0f} s")


def main(model: str, out: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-m", "cxr_ldm.app", f"model={model}", f"port={port}"])
    try:
        _wait_until_up(url, process)
        chromium = next(p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists())
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            page.fill("#prompt textarea", PROMPT)
            page.fill("#n-images input", "4")
            page.fill("#seed input", "0")
            page.click("#generate")
            page.wait_for_function(
                "() => { const els = [...document.querySelectorAll('#gallery img')];"
                " return els.length === 4 && els.every(e => e.complete && e.naturalWidth > 0); }",
                timeout=WAIT_MS,
            )
            time.sleep(1)  # the status line settles
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=60)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
