"""The page in a real browser: headless Chromium (Debian's, which .ci/run installs) driven by Playwright.

A person's path: type a report, press Generate, wait for the images, look at them (number, pixel size, seeds),
download the zip; bad input shows a message on the page; a second user's request waits in the queue and shows
its place. Every request the page makes goes to the app on 127.0.0.1; any other is blocked and the test fails.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("gradio", reason='the app tests need the app extra: pip install -e ".[app]"')
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the dev extra)")

from cxr_ldm.pipelines.model_card import DATA_USE  # noqa: E402

pytest_plugins = ["ldm_fixtures"]
pytestmark = pytest.mark.slow
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
WAIT_MS = 120_000
SCREENSHOT = "app_screenshot.png"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture()
def open_page(browser, app_server):
    """New pages (each its own browser context: another user) on the app; non-local requests are blocked."""
    contexts, blocked = [], []

    def route(route) -> None:
        if route.request.url.startswith(app_server.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    def new_page():
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.route("**/*", route)
        page.goto(app_server.url)
        page.wait_for_selector("#prompt textarea")
        return page

    yield new_page
    for context in contexts:
        context.close()
    assert blocked == [], f"the page tried to reach other hosts: {blocked[:5]}"


def fill(page, field: str, value: str) -> None:
    page.fill(f"#{field} textarea" if field == "prompt" else f"#{field} input", value)


def gallery_images(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#gallery img", "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, done: e.complete}))"
    )


# Every text the status line shows, recorded by the page itself on each change of the DOM: polling from the test
# can miss a step phase that lasts under a second on a fast machine (seen on CI).
RECORD_STATUS_TEXTS = """() => {
    window.statusTexts = new Set();
    const record = () => document.querySelectorAll('.meta-text, .progress-text')
        .forEach(e => window.statusTexts.add(e.textContent.trim()));
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def wait_for_images(page, n: int) -> list[dict]:
    page.wait_for_function(
        "n => { const els = [...document.querySelectorAll('#gallery img')];"
        " return els.length === n && els.every(e => e.complete && e.naturalWidth > 0); }",
        arg=n, timeout=WAIT_MS,
    )  # fmt: skip
    return gallery_images(page)


def test_type_a_report_press_generate_see_the_images_and_download_them(open_page, tmp_path: Path):
    page = open_page()
    text = page.inner_text("body")
    assert "Intended use." in text and "Not for clinical use" in text  # the model card's notes
    assert "Data use." in text and DATA_USE.split(". ")[0] in text
    assert "trained checkpoint, 32 px images" in text

    fill(page, "prompt", "Large right pleural effusion.")
    fill(page, "n-images", "3")
    fill(page, "seed", "40")
    page.click("#generate")
    images = wait_for_images(page, 3)
    assert [(i["w"], i["h"]) for i in images] == [(32, 32)] * 3  # the model's own pixels, not a thumbnail
    gallery_text = page.inner_text("#gallery")
    assert all(f"seed {s}" in gallery_text for s in (40, 41, 42))

    page.screenshot(path=str(tmp_path / SCREENSHOT), full_page=True)
    with Image.open(tmp_path / SCREENSHOT) as shot:
        assert shot.width == 1280 and shot.height >= 900

    with page.expect_download() as download:
        page.click("#download")
    archive_path = tmp_path / download.value.suggested_filename
    download.value.save_as(archive_path)
    with zipfile.ZipFile(archive_path) as archive:
        names = sorted(archive.namelist())
        settings = json.loads(archive.read("samples.json"))
        sizes = {Image.open(io.BytesIO(archive.read(n))).size for n in names if n.endswith(".png")}
    assert names == ["image_00_seed_40.png", "image_01_seed_41.png", "image_02_seed_42.png", "samples.json"]
    assert sizes == {(32, 32)}
    assert [(r["seed"], r["prompt"]) for r in settings["images"]] == [
        (s, "Large right pleural effusion.") for s in (40, 41, 42)
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prompt", "", "The report text is empty"),
        ("prompt", "Small left pleural effusion. " * 25, "tokens, over the 77 the text encoder reads: shorten it."),
        ("n-images", "0", "Number of images must be a whole number from 1 to 6 (got 0)."),
        ("n-images", "12", "Number of images must be a whole number from 1 to 6 (got 12)."),
        ("steps", "500", "Steps must be a whole number from 1 to 60 (got 500)."),
    ],
)
def test_bad_input_shows_a_message_on_the_page(open_page, field: str, value: str, message: str):
    page = open_page()
    fill(page, "prompt", "Moderate cardiomegaly.")
    fill(page, field, value)
    page.click("#generate")
    toast = page.wait_for_selector(".toast-body", timeout=WAIT_MS)
    assert message in toast.inner_text()
    assert "Traceback" not in page.inner_text("body")
    assert gallery_images(page) == []


def test_a_second_user_waits_in_the_queue_then_gets_their_images(open_page):
    first, second = open_page(), open_page()
    for page, prompt in ((first, "Large right pneumothorax."), (second, "Moderate cardiomegaly.")):
        fill(page, "prompt", prompt)
        fill(page, "n-images", "6")
        fill(page, "steps", "60")
    first.click("#generate")
    first.wait_for_selector("#gallery .progress-text, #gallery .meta-text", timeout=WAIT_MS)  # it is running
    second.evaluate(RECORD_STATUS_TEXTS)
    second.click("#generate")
    wait_for_images(second, 6)
    seen = set(second.evaluate("() => [...window.statusTexts]"))
    assert any("queue:" in s for s in seen), seen  # it showed its place in the queue...
    assert any("step" in s for s in seen), seen  # ...then its own progress, step by step
    assert len(wait_for_images(first, 6)) == len(wait_for_images(second, 6)) == 6
