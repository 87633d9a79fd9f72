"""The drawing page in a real browser: Playwright drives Chromium, which draws a real MNIST test digit on the
canvas with mouse strokes; the page must show that digit and ten probabilities."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers import start_server, stop_server, tiny_run
from mnist_lightning.data.files import load_split
from mnist_lightning.inference import preprocess
from mnist_lightning.inference.torch_runtime import probabilities
from mnist_lightning.models.checkpoint import load_network

pytestmark = pytest.mark.slow  # a server and a browser

CANVAS, SCALE, PEN = 280, 10, 18  # the page's canvas size, canvas pixels per MNIST pixel, and its line width
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = (
    "No Chromium found for the drawing page's browser test. Install it: `apt-get install chromium` on "
    "Debian/Ubuntu (CI's .ci/run does this when it is missing), or set CHROMIUM=/path/to/chrome."
)


def browser_path() -> str:
    found = os.environ.get("CHROMIUM") or next((p for name in BROWSERS if (p := shutil.which(name))), None)
    if not found:
        pytest.fail(INSTALL)  # missing means failing: a skipped browser test would hide a broken page
    return found


def strokes(digit: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The digit as horizontal pen strokes over its ink, row by row, in canvas coordinates."""
    ink = digit >= 96
    lines = []
    for row in range(28):
        col = 0
        while col < 28:
            if not ink[row, col]:
                col += 1
                continue
            end = col
            while end + 1 < 28 and ink[row, end + 1]:
                end += 1
            y = (row + 0.5) * SCALE
            lines.append((((col + 0.5) * SCALE, y), ((end + 0.5) * SCALE, y)))
            col = end + 1
    return lines


def drawn_like_the_page(lines) -> Image.Image:
    """What those strokes leave on the page's canvas (white round pen on black), drawn here with Pillow."""
    image = Image.new("L", (CANVAS, CANVAS), 0)
    pen = ImageDraw.Draw(image)
    for (x0, y0), (x1, y1) in lines:
        pen.line([(x0, y0), (x1, y1)], fill=255, width=PEN)
        for x, y in ((x0, y0), (x1, y1)):
            pen.ellipse([x - PEN / 2, y - PEN / 2, x + PEN / 2, y + PEN / 2], fill=255)
    return image


def test_drawing_a_digit_shows_it_and_ten_probabilities(trained, mnist_dir, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    _, run_dir, _ = trained
    checkpoint = next((run_dir / "checkpoints").glob("epoch_01-*.ckpt"))
    # The page is what is under test, not the model: take the first test digit that this model reads with
    # confidence once drawn as pen strokes.
    network = load_network(checkpoint)
    images, labels = load_split(mnist_dir, train=False)
    for index in range(50):
        lines = strokes(images[index].numpy())
        (probs,) = probabilities(network, [preprocess.prepare(drawn_like_the_page(lines)).digit])
        if int(probs.argmax()) == int(labels[index]) and float(probs.max()) > 0.95:
            break
    else:
        pytest.fail("none of the first 50 test digits is read with confidence when drawn as strokes")
    label = int(labels[index])

    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=browser_path(),
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-sync",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(server.url + "/")
            canvas = page.locator("#canvas").bounding_box()
            with page.expect_response(lambda r: r.url.endswith("/predict")):  # the first stroke reaches the server
                for (x0, y0), (x1, y1) in lines:
                    page.mouse.move(canvas["x"] + x0, canvas["y"] + y0)
                    page.mouse.down()
                    page.mouse.move(canvas["x"] + x1, canvas["y"] + y1, steps=max(2, int((x1 - x0) / 8)))
                    page.mouse.up()
            expect(page.locator("#prediction")).to_have_text(str(label), timeout=30_000)
            page.wait_for_load_state("networkidle")  # every stroke's answer has come back
            expect(page.locator("#prediction")).to_have_text(str(label))
            bars = page.locator("#probabilities .bar")
            expect(bars).to_have_count(10)
            shown = [float(bars.nth(d).get_attribute("data-probability")) for d in range(10)]
            assert sum(shown) == pytest.approx(1, abs=1e-3) and int(np.argmax(shown)) == label
            assert page.locator("#probabilities .bar.best").get_attribute("data-digit") == str(label)
            page.screenshot(path=str(tmp_path / "page.png"))
            if os.environ.get("PAGE_SCREENSHOT"):  # the README's picture is taken by this test
                page.screenshot(path=os.environ["PAGE_SCREENSHOT"])

            page.click("#clear")
            expect(page.locator("#prediction")).to_have_text("–")
            browser.close()
    finally:
        assert stop_server(server) == -signal.SIGTERM, server.log()
    assert Path(tmp_path / "page.png").stat().st_size > 10_000


def test_with_auth_predict_the_page_works_when_opened_with_the_token(mnist_dir, tmp_path, monkeypatch):
    """docs/security.md: a service started with auth.predict=true answers the page opened as /#token=<token>, and
    the page opened without it shows the 401's detail."""
    from playwright.sync_api import expect, sync_playwright

    token = "page-token-0123456789abcd"
    monkeypatch.setenv("MNIST_SERVE_TOKEN", token)
    checkpoint = tiny_run(tmp_path / "run", seed=0)
    server = start_server(tmp_path, mnist_dir, f"ckpt_path={checkpoint}", "auth.predict=true")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path(), headless=True, args=["--no-sandbox"])
            for opened, status in ((f"/#token={token}", 200), ("/", 401)):
                page = browser.new_page(viewport={"width": 900, "height": 640})
                page.goto(server.url + opened)
                box = page.locator("#canvas").bounding_box()
                with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
                    page.mouse.move(box["x"] + 100, box["y"] + 60)
                    page.mouse.down()
                    page.mouse.move(box["x"] + 110, box["y"] + 220, steps=8)
                    page.mouse.up()
                assert answer.value.status == status, opened
                if status == 200:
                    expect(page.locator("#model-version")).to_contain_text("mlp")
                    expect(page.locator("#status")).to_have_text("")
                else:
                    expect(page.locator("#status")).to_contain_text("needs the service's token")
                page.close()
            browser.close()
    finally:
        assert stop_server(server) == -signal.SIGTERM, server.log()
    assert token not in server.log()
